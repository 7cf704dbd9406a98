"""The import rules of docs/ARCHITECTURE.md, enforced: each room imports only the rooms it may; metrics are
constructed only in unison.ops.metrics and logging is configured only in unison.ops.logs."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "platform" / "unison"

# room -> rooms it may import (keep in step with the table in docs/ARCHITECTURE.md)
ALLOWED: dict[str, set[str]] = {
    "domain": set(),
    "config": {"domain"},
    "data": {"domain"},
    "features": {"domain", "data", "config", "ops"},
    "model": {"domain", "config", "data", "features", "ops"},
    "ops": {"config"},
    "batch": {"domain", "config", "features", "model", "ops"},
    "serving": {"domain", "config", "data", "model", "features", "ops", "streaming"},
    "streaming": {"domain", "config", "model", "features", "ops"},
    "parity": {"config", "data", "features", "model", "ops", "batch", "serving", "streaming"},
    "cli": {"*"},
}


def _room(path: Path) -> str:
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def _imported_rooms(path: Path) -> set[str]:
    rooms = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "unison" and len(parts) > 1:
                rooms.add(parts[1])
    return rooms


def test_no_platform_package() -> None:
    assert not (PACKAGE.parent / "__init__.py").exists(), "platform/ must never be a package"


def test_every_room_is_documented() -> None:
    rooms = {_room(p) for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE}
    assert rooms <= set(ALLOWED), f"undocumented rooms: {rooms - set(ALLOWED)}"
    doc = (PACKAGE.parents[1] / "docs" / "ARCHITECTURE.md").read_text()
    for room in ALLOWED:
        assert f"`unison.{room}`" in doc


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_follow_the_rules(path: Path) -> None:
    if path.parent == PACKAGE and path.name == "__init__.py":
        return
    room = _room(path)
    allowed = ALLOWED[room]
    if "*" in allowed:
        return
    forbidden = _imported_rooms(path) - allowed - {room}
    where = path.relative_to(PACKAGE)
    assert not forbidden, f"{where} imports {forbidden}; {room} may import only {allowed or 'nothing'}"


# ---------------------------------------------------------------------------------------------- one of each

METRICS_MODULE = PACKAGE / "ops" / "metrics.py"
LOGS_MODULE = PACKAGE / "ops" / "logs.py"
METRIC_LIBRARIES = ("ray.util.metrics", "ray.serve.metrics", "prometheus_client")
METRIC_KINDS = {"Counter", "Gauge", "Histogram", "Summary"}


def _metric_constructions(path: Path) -> list[str]:
    """Where `path` imports a metrics library or calls a metric constructor (`collections.Counter` aside)."""
    tree = ast.parse(path.read_text())
    from_collections = {alias.asname or alias.name for node in ast.walk(tree)
                        if isinstance(node, ast.ImportFrom) and node.module == "collections" for alias in node.names}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
            collections_counter = name in from_collections or ast.unparse(func) == "collections.Counter"
            if name in METRIC_KINDS and not collections_counter:
                found.append(f"line {node.lineno}: calls {ast.unparse(func)}(...)")
            continue
        else:
            continue
        hits = [m for m in modules if any(m == lib or m.startswith(lib + ".") for lib in METRIC_LIBRARIES)]
        found += [f"line {node.lineno}: imports {hits[0]}"] if hits else []
    return found


def test_only_ops_metrics_constructs_metrics() -> None:
    """Every `unison_*` metric is defined once, in unison.ops.metrics (names, labels, buckets), and recorded
    through it (`inc`, `observe`, `set_gauge`): no other module creates a Ray or Prometheus metric."""
    problems = [f"{path.relative_to(PACKAGE)} {where}" for path in sorted(PACKAGE.rglob("*.py"))
                if path != METRICS_MODULE for where in _metric_constructions(path)]
    assert not problems, "define the metric in unison/ops/metrics.py and record it there:\n" + "\n".join(problems)


def test_the_metric_scan_sees_the_registry() -> None:
    """The scan above is not vacuous: it finds the registry's own imports and constructor calls."""
    found = _metric_constructions(METRICS_MODULE)
    assert any("imports ray.util.metrics" in f for f in found) and any("calls kinds.Counter" in f for f in found)


def test_logging_is_configured_in_one_place() -> None:
    """`logging.basicConfig` only in unison.ops.logs: every process configures logging with `setup_logging()`."""
    users = [str(path.relative_to(PACKAGE)) for path in sorted(PACKAGE.rglob("*.py"))
             if path != LOGS_MODULE and "basicConfig" in path.read_text()]
    assert not users, f"call unison.ops.logs.setup_logging() instead of logging.basicConfig in {users}"
    assert "basicConfig" in LOGS_MODULE.read_text()


PREDICTOR_MODULE = PACKAGE / "model" / "predictor.py"
REPO = PACKAGE.parents[1]


def _predictor_constructions(path: Path) -> list[str]:
    """Calls that build a Predictor other than through `Predictor.from_options` / `from_registry` (in the
    Predictor's own module, `cls(...)` is one)."""
    names = {"Predictor", "model.Predictor", "unison.model.Predictor", *(["cls"] if path == PREDICTOR_MODULE else [])}
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call):
            continue
        func = ast.unparse(node.func)
        if func in names or func.endswith("predictor_for"):
            found.append(f"line {node.lineno}: {func}(...)")
    return found


def test_one_predictor_factory() -> None:
    """`Predictor.from_options` (behind it, `from_registry`) is the only way to build a Predictor, anywhere in the
    package, the pipelines, the benchmarks and the tests: a second construction site is how the batch job once
    ignored `model.execution`, `max_length` and `intra_op_threads`."""
    files = [p for d in ("platform", "pipelines", "benchmarks", "tests") for p in sorted((REPO / d).rglob("*.py"))]
    problems = [f"{path.relative_to(REPO)} {where}" for path in files if path != PREDICTOR_MODULE
                and path != Path(__file__) for where in _predictor_constructions(path)]
    assert not problems, "build Predictors with Predictor.from_options:\n" + "\n".join(problems)
    own = _predictor_constructions(PREDICTOR_MODULE)
    assert len(own) == 1 and "cls(...)" in own[0], own  # the factory's own single call


def test_the_serving_paths_take_their_predictor_options_from_the_settings() -> None:
    """Every Predictor the package builds gets `PredictorOptions.from_config(settings.model, ...)`: a path may
    override named fields (the batch job's threads), never start from other defaults."""
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        if path == PREDICTOR_MODULE or "PredictorOptions(" not in text:
            continue
        problems.append(str(path.relative_to(PACKAGE)))
    assert not problems, f"hand-built PredictorOptions in {problems}; use PredictorOptions.from_config"


MAX_MODULE_LINES = 500


def test_no_module_is_long_without_saying_why() -> None:
    """A module over MAX_MODULE_LINES lines says at its top why it is one piece (`Longer than 500 lines: ...`)."""
    long = [f"{path.relative_to(PACKAGE)} ({n} lines)" for path in sorted(PACKAGE.rglob("*.py"))
            if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
            and "Longer than 500 lines:" not in (ast.get_docstring(ast.parse(path.read_text())) or "")]
    assert not long, f"split these, or say at the top why they are one piece: {long}"

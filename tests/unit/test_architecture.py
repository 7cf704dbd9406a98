"""The import rules of docs/ARCHITECTURE.md, enforced: each room imports only the rooms it may."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "platform" / "unison"

# room -> rooms it may import (keep in step with the table in docs/ARCHITECTURE.md)
ALLOWED: dict[str, set[str]] = {
    "config": set(),
    "data": set(),
    "features": {"data", "config", "ops"},
    "model": {"data", "features"},
    "ops": {"config"},
    "batch": {"config", "features", "model", "ops"},
    "serving": {"config", "data", "model", "features", "ops", "streaming"},
    "streaming": {"config", "model", "features", "ops"},
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

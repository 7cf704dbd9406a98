"""What the deployment tests share: the repository's files, parsed once (pyproject pins, Dockerfiles, manifests)."""

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]


@dataclass(frozen=True)
class Project:
    version: str
    ray: str  # the ray==X pin
    torch: str  # the torch==X pin
    python_tag: str  # py311 for requires-python >=3.11,<3.12
    extras: dict[str, list[str]]


def _pin(dependencies: list[str], name: str) -> str:
    for requirement in dependencies:
        match = re.match(rf"^{re.escape(name)}(\[[^\]]*\])?==(\S+)$", requirement)
        if match:
            return match.group(2)
    raise AssertionError(f"pyproject.toml pins no {name}==X")


@pytest.fixture(scope="session")
def project() -> Project:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    match = re.fullmatch(r">=(\d+)\.(\d+),<\d+\.(\d+)", meta["requires-python"])
    assert match and int(match.group(3)) == int(match.group(2)) + 1, "requires-python must name one minor version"
    return Project(version=meta["version"], ray=_pin(meta["dependencies"], "ray"),
                   torch=_pin(meta["dependencies"], "torch"), python_tag=f"py{match.group(1)}{match.group(2)}",
                   extras=meta["optional-dependencies"])


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    stage: int  # index of the FROM it belongs to


def _parse_dockerfile(path: Path) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped (enough for the checks here)."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, f"{path} ends inside a continued line"
    instructions, stage = [], -1
    for line in logical:
        keyword, _, args = line.partition(" ")
        if keyword.upper() == "FROM":
            stage += 1
        instructions.append(Instruction(keyword.upper(), args.strip(), stage))
    return instructions


@pytest.fixture(scope="session")
def dockerfiles() -> dict[str, list[Instruction]]:
    """`cpu` (docker/Dockerfile) and `gpu` (docker/Dockerfile.gpu) -> their instructions."""
    return {"cpu": _parse_dockerfile(ROOT / "docker" / "Dockerfile"),
            "gpu": _parse_dockerfile(ROOT / "docker" / "Dockerfile.gpu")}


@pytest.fixture(scope="session")
def manifests() -> dict[str, list[dict[str, Any]]]:
    """The committed files in deploy/kuberay/, by file name, each a list of Kubernetes objects."""
    return {path.name: [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
            for path in sorted((ROOT / "deploy" / "kuberay").glob("*.yaml"))}


def _one(manifests: dict[str, list[dict[str, Any]]], kind: str) -> dict[str, Any]:
    found = [doc for docs in manifests.values() for doc in docs if doc.get("kind") == kind]
    assert len(found) == 1, f"expected one {kind} in deploy/kuberay/, found {len(found)}"
    return found[0]


@pytest.fixture(scope="session")
def rayservice(manifests: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    return _one(manifests, "RayService")


@pytest.fixture(scope="session")
def rayjob(manifests: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    return _one(manifests, "RayJob")


@pytest.fixture(scope="session")
def configmap(manifests: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    return _one(manifests, "ConfigMap")


@pytest.fixture(scope="session")
def ray_clusters(rayservice: dict[str, Any], rayjob: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """`RayService` and `RayJob` -> their Ray cluster spec."""
    return {"RayService": rayservice["spec"]["rayClusterConfig"], "RayJob": rayjob["spec"]["rayClusterSpec"]}


@pytest.fixture(scope="session")
def pod_templates(ray_clusters: dict[str, dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """(`RayService` | `RayJob`, `head` | worker group name) -> pod template."""
    templates = {}
    for owner, cluster in ray_clusters.items():
        templates[(owner, "head")] = cluster["headGroupSpec"]["template"]
        for group in cluster["workerGroupSpecs"]:
            templates[(owner, group["groupName"])] = group["template"]
    return templates


@pytest.fixture(scope="session")
def all_containers(manifests: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Every container spec anywhere in the manifests (found by walking, so none can hide)."""
    found: list[dict[str, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("containers"), list):
                found.extend(node["containers"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(manifests)
    return found

"""Registry: versions, aliases, atomic registration, and refusal of tampered or partial artifacts."""

import shutil
from pathlib import Path

import pytest

from unison.model.manifest import Manifest, TensorSpec, VariantInfo
from unison.model.registry import ArtifactError, Registry, RegistryError


def _manifest(name: str = "m") -> Manifest:
    return Manifest(
        name=name, created_at="2026-01-01T00:00:00+00:00", kind="encoder", source_model={}, fingerprint="f",
        opset=17, max_length=16, inputs=[TensorSpec(name="input_ids", dtype="int64", shape=["batch", "sequence"])],
        outputs=[TensorSpec(name="embedding", dtype="float32", shape=["batch", 4])],
        tokenizer_files=["tokenizer/tokenizer.json"],
        variants={"fp32": VariantInfo(file="fp32/model.onnx", data_files=["fp32/model.onnx.data"],
                                      description="test")},
    )


def _stage(registry: Registry, name: str = "m", payload: bytes = b"weights") -> Path:
    staging = registry.staging_dir(name)
    (staging / "tokenizer").mkdir()
    (staging / "tokenizer" / "tokenizer.json").write_text("{}")
    (staging / "fp32").mkdir()
    (staging / "fp32" / "model.onnx").write_bytes(b"graph")
    (staging / "fp32" / "model.onnx.data").write_bytes(payload)
    return staging


def test_versions_increment_and_aliases_resolve(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    first = registry.register(_stage(registry), _manifest())
    second = registry.register(_stage(registry, payload=b"other"), _manifest())
    assert (first.manifest.version, second.manifest.version) == ("1", "2")
    assert registry.versions("m") == ["1", "2"]
    assert registry.resolve("m") == ("m", "2")  # no production alias yet: latest
    registry.promote("m", "1")
    assert registry.resolve("m") == ("m", "1")
    assert registry.resolve("m:production") == ("m", "1")
    assert registry.resolve("m:latest") == ("m", "2")
    registry.promote("m", "2", alias="canary")
    assert registry.aliases("m") == {"production": "1", "canary": "2"}
    assert not [p for p in (tmp_path / "m").iterdir() if p.name.startswith(".staging")]


def test_checksums_cover_every_file(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    artifact = registry.register(_stage(registry), _manifest())
    assert set(artifact.manifest.files) == {"tokenizer/tokenizer.json", "fp32/model.onnx", "fp32/model.onnx.data"}
    registry.load("m:1")  # verifies


def test_tampered_file_is_refused_naming_it(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    artifact = registry.register(_stage(registry), _manifest())
    (artifact.path / "fp32" / "model.onnx.data").write_bytes(b"weightz")
    with pytest.raises(ArtifactError, match=r"checksum mismatch for fp32/model\.onnx\.data"):
        registry.load("m:1")
    with pytest.raises(ArtifactError):
        registry.promote("m", "1")  # a broken artifact is never promoted


def test_partial_artifact_is_refused(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    artifact = registry.register(_stage(registry), _manifest())
    (artifact.path / "fp32" / "model.onnx").unlink()
    with pytest.raises(ArtifactError, match="missing"):
        registry.load("m:1")
    shutil.rmtree(artifact.path / "tokenizer")
    (artifact.path / "manifest.json").unlink()
    with pytest.raises(ArtifactError, match=r"no manifest\.json"):
        registry.load("m:1")


def test_declared_files_must_exist_to_register(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    staging = _stage(registry)
    (staging / "fp32" / "model.onnx.data").unlink()
    with pytest.raises(ArtifactError, match="declared files missing"):
        registry.register(staging, _manifest())
    assert registry.versions("m") == []


def test_unknown_names_list_what_exists(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    registry.register(_stage(registry), _manifest())
    with pytest.raises(RegistryError, match=r"models: m\)"):
        registry.resolve("other")
    with pytest.raises(RegistryError, match="versions: 1"):
        registry.resolve("m:7")
    with pytest.raises(RegistryError, match="cannot be an alias"):
        registry.promote("m", "1", alias="3")
    with pytest.raises(RegistryError, match="invalid model name"):
        registry.staging_dir("Bad Name")


def test_variant_selection_verifies_only_what_is_used(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    registry.register(_stage(registry), _manifest())
    artifact = registry.load("m", ["fp32"])
    with pytest.raises(ArtifactError, match="has no variant 'int8'"):
        artifact.verify(["int8"])

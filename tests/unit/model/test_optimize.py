"""The optimization pipeline on the real default model: export parity, fusions, gates, reports, caching."""

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from unison.features import feature_matrix, transform
from unison.features.offline import load_labelled
from unison.model.export import build_reference, default_source, inspect_source
from unison.model.head import TriageHead
from unison.model.optimize import OptimizeOptions, optimize, variant_outputs
from unison.model.registry import ArtifactError, Registry
from unison.model.tokenize import encode, load_tokenizer
from unison.model.validate import QualityGates, compare


def test_artifact_has_every_variant_with_its_gate_and_report(built_model) -> None:
    registry = Registry(built_model.registry_root)
    artifact = registry.load(built_model.ref)
    manifest = artifact.manifest
    assert set(manifest.variants) == {"fp32", "int8", "fp16"}
    assert manifest.kind == "triage" and manifest.labels[0] == "billing"
    assert [t.name for t in manifest.inputs] == ["input_ids", "attention_mask", "token_type_ids", "features"]
    for info in manifest.variants.values():
        assert info.gate and all(check.passed for check in info.gate)
        assert info.data_files, "weights are stored as external data"
    assert manifest.variants["int8"].size_bytes < manifest.variants["fp32"].size_bytes / 3
    report = artifact.path / "report"
    assert {p.name for p in report.iterdir()} >= {"benchmark.md", "benchmark.json", "benchmark.png"}
    figures = json.loads((report / "benchmark.json").read_text())
    assert {r["engine"] for r in figures["rows"]} == {"pytorch", "fp32", "int8", "fp16"}
    assert figures["matmul_gflops"] > 0
    assert set(manifest.training_reference) >= {"tenure_years", "text_tokens"}


def test_fusions_happened(built_model) -> None:
    fusions = built_model.result.fusions
    assert fusions.get("Attention") == 6 and fusions.get("SkipLayerNormalization") == 12
    assert fusions.get("BiasGelu", 0) + fusions.get("Gelu", 0) + fusions.get("FastGelu", 0) == 6
    graph = onnx.load(str(Registry(built_model.registry_root).load(built_model.ref).file("fp32/model.onnx")),
                      load_external_data=False)
    assert sum(node.op_type == "Attention" for node in graph.graph.node) == 6


def test_exported_graph_matches_a_fresh_pytorch_model(built_model) -> None:
    """Independent of the gate code: fp32 ONNX vs a newly loaded reference, unpadded rows."""
    artifact = Registry(built_model.registry_root).load(built_model.ref)
    head = TriageHead.load(artifact.file("head.npz"))
    reference = build_reference(inspect_source(default_source()), head)
    rows = transform(load_labelled(built_model.data_dir, "eval").head(20))
    tokenizer = load_tokenizer(artifact.path / "tokenizer", artifact.manifest.max_length)
    ids, _ = encode(tokenizer, rows["text"].tolist())
    features = feature_matrix(rows)
    names = artifact.manifest.output_names()
    onnx_out = variant_outputs(artifact.file("fp32/model.onnx"), ids, features, names,
                               artifact.manifest.input_names(), 1)
    for i, row in enumerate(ids):
        tensor = torch.from_numpy(row[None, :])
        with torch.inference_mode():
            _logits, probabilities, priority, embedding = reference(
                tensor, torch.ones_like(tensor), torch.zeros_like(tensor), torch.from_numpy(features[i : i + 1]))
        np.testing.assert_allclose(onnx_out["embedding"][i], embedding[0].numpy(), atol=2e-5)
        np.testing.assert_allclose(onnx_out["probabilities"][i], probabilities[0].numpy(), atol=2e-5)
        assert abs(float(onnx_out["priority"][i]) - float(priority[0])) < 2e-5


def test_int8_quality_is_measured_against_labels(built_model) -> None:
    quality = built_model.result.quality["int8"].metrics
    assert quality["top1_agreement"] >= 0.98
    assert quality["embedding_cosine_mean"] >= 0.99
    assert quality["accuracy"] >= 0.9  # the generated task is learnable; a broken head would be near 1/6


def test_a_broken_variant_fails_its_gate(built_model, tmp_path: Path) -> None:
    artifact = Registry(built_model.registry_root).load(built_model.ref)
    graph = onnx.load(str(artifact.file("fp32/model.onnx")))
    rng = np.random.default_rng(0)
    for tensor in graph.graph.initializer:  # damage every large weight matrix a little
        if tensor.data_type == onnx.TensorProto.FLOAT and len(tensor.dims) == 2 and tensor.dims[0] >= 384:
            values = onnx.numpy_helper.to_array(tensor)
            tensor.CopyFrom(onnx.numpy_helper.from_array(
                (values + rng.normal(0, 0.05, values.shape)).astype(np.float32), tensor.name))
    broken = tmp_path / "broken.onnx"
    onnx.save_model(graph, str(broken), save_as_external_data=True, location="broken.onnx.data")
    rows = transform(load_labelled(built_model.data_dir, "eval").head(40))
    tokenizer = load_tokenizer(artifact.path / "tokenizer", artifact.manifest.max_length)
    ids, _ = encode(tokenizer, rows["text"].tolist())
    names, inputs = artifact.manifest.output_names(), artifact.manifest.input_names()
    good = variant_outputs(artifact.file("fp32/model.onnx"), ids, feature_matrix(rows), names, inputs, 1)
    bad = variant_outputs(broken, ids, feature_matrix(rows), names, inputs, 1)
    result = compare("int8", good, bad, QualityGates().int8)
    assert not result.passed
    assert any("embedding_cosine_mean" in failure for failure in result.failures())


def test_variant_failing_its_gate_is_not_registered(demo_data: Path, tmp_path: Path) -> None:
    impossible = QualityGates().model_copy(update={"int8": QualityGates().int8.model_copy(
        update={"embedding_cosine_mean": 0.999999})})
    registry = Registry(tmp_path / "registry")
    result = optimize(OptimizeOptions(data_dir=demo_data, variants=["fp32", "int8"], eval_rows=30, train_rows=300,
                                      skip_benchmark=True, gates=impossible), registry)
    assert result.artifact is not None
    assert set(result.artifact.manifest.variants) == {"fp32"}
    assert "int8" in result.rejected and "embedding_cosine_mean" in result.rejected["int8"][0]
    assert not (result.artifact.path / "int8").exists()
    with pytest.raises(ArtifactError, match="no variant 'int8'"):
        registry.load(result.artifact.ref, ["int8"])

    again = optimize(OptimizeOptions(data_dir=demo_data, variants=["fp32", "int8"], eval_rows=30, train_rows=300,
                                     skip_benchmark=True, gates=impossible), registry)
    assert again.cached and again.artifact is not None and again.artifact.ref == result.artifact.ref


def test_tampered_artifact_is_refused(built_model, tmp_path: Path) -> None:
    copy = tmp_path / "registry"
    shutil.copytree(built_model.registry_root, copy)
    registry = Registry(copy)
    artifact = registry.load(built_model.ref)
    data = artifact.file("int8/model.onnx.data")
    blob = bytearray(data.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    data.write_bytes(bytes(blob))
    registry.load(built_model.ref, ["fp32"])  # untouched variants still load
    with pytest.raises(ArtifactError, match=r"int8/model\.onnx\.data"):
        registry.load(built_model.ref, ["int8"])


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sequence-classification model made locally from the shipped encoder (random 6-way head; no download)."""
    from transformers import AutoModelForSequenceClassification

    from unison.data import CATEGORIES
    from unison.model.export import TOKENIZER_FILES

    target = tmp_path_factory.mktemp("classifier")
    model = AutoModelForSequenceClassification.from_pretrained(
        default_source(), num_labels=len(CATEGORIES), id2label=dict(enumerate(CATEGORIES)),
        label2id={c: i for i, c in enumerate(CATEGORIES)})
    model.save_pretrained(target)
    for name in TOKENIZER_FILES:
        if (default_source() / name).exists():
            shutil.copy2(default_source() / name, target / name)
    return target


@pytest.mark.parametrize("kind", ["sequence-classification", "encoder"])
def test_other_model_kinds_export_and_pass_their_gates(kind: str, classifier_dir: Path, demo_data: Path,
                                                       tmp_path: Path) -> None:
    source = classifier_dir if kind == "sequence-classification" else default_source()
    registry = Registry(tmp_path / "registry")
    result = optimize(OptimizeOptions(source=source, name=kind.split("-")[0], kind="auto" if kind != "encoder"
                                      else "encoder", data_dir=demo_data, variants=["fp32", "int8"], eval_rows=40,
                                      skip_benchmark=True), registry)
    assert result.artifact is not None and result.artifact.manifest.kind == kind
    outputs = result.artifact.manifest.output_names()
    assert outputs == (["logits", "probabilities"] if kind != "encoder" else ["embedding"])
    assert result.quality["fp32"].passed and "features" not in result.artifact.manifest.input_names()
    from unison.model import Predictor, PredictorOptions

    predictor = Predictor.from_options(result.artifact, PredictorOptions(variant="fp32"))
    out = predictor.predict(["my invoice is wrong", "the app crashes"])
    if kind == "encoder":
        assert out.embedding is not None and np.allclose(np.linalg.norm(out.embedding, axis=1), 1, atol=1e-4)
        assert "embedding" in out.to_records()[0]
    else:
        assert out.categories()[0] in result.artifact.manifest.labels

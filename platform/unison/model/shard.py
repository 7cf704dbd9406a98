"""Pipeline sharding: an ONNX graph cut into K stages at layer boundaries, run as a chain.

A model that does not fit one device is cut where a transformer layer hands its hidden state to the next
(the output of a LayerNormalization-family node), at the boundaries that best balance the stages' weight bytes.
Each stage is an ONNX model of its own: its inputs are what its nodes read from earlier stages or from the
caller, its outputs what later stages or the caller need. `split` writes the stages and checks nothing is lost
(`StageSpec` says what flows where); `run_stage` is the one step every executor calls, in-process
(`LocalStages`, used by tests and the benchmark) or in Ray actors placed one per device
(`unison.model.placement.StageActors`), where the tensors a stage forwards travel to the next stage by Ray's
object transfer, never through the caller.

Within a stage ONNX Runtime applies the same graph as unsharded, so a stage chain's outputs equal the
unsharded model's up to the fusions ORT can no longer do across a cut (fp32: equal within 1e-5).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger(__name__)

BOUNDARY_OPS = ("LayerNormalization", "SkipLayerNormalization", "SkipSimplifiedLayerNormalization",
                "SimplifiedLayerNormalization", "EmbedLayerNormalization", "QEmbedLayerNormalization")
MAX_STAGES = 8


class ShardError(ValueError):
    """The graph cannot be cut as asked (too few layer boundaries, unknown graph shape)."""


class StageSpec(BaseModel):
    """One stage of a sharded graph, as recorded in the manifest."""

    model_config = ConfigDict(extra="forbid")

    file: str = Field(description="Stage graph, relative to the artifact directory.")
    data_files: list[str] = Field(default_factory=list, description="External weight files of the stage.")
    inputs: list[str] = Field(description="Tensors the stage graph reads (from earlier stages or the caller).")
    outputs: list[str] = Field(description="Tensors the stage graph computes that are needed after it.")
    from_caller: list[str] = Field(description="Model inputs the caller sends this stage directly.")
    forward: list[str] = Field(description="Tensors this stage passes to the next one (its own outputs and what "
                                           "it relays for later stages).")
    final: list[str] = Field(description="Model outputs this stage produces (returned to the caller).")
    weight_bytes: int = Field(description="Bytes of weights in this stage.")
    nodes: int = Field(description="Graph nodes in this stage.")


@dataclass
class _Graph:
    model: Any  # onnx.ModelProto with weights loaded
    inputs: list[str]
    outputs: list[str]
    initializers: dict[str, int]  # name -> bytes


def _load(path: Path) -> _Graph:
    import onnx

    model = onnx.load(str(path))  # external data next to it is loaded: the stages are written with their weights
    sizes = {t.name: int(np.prod(t.dims, dtype=np.int64)) * np.dtype(onnx.helper.tensor_dtype_to_np_dtype(
        t.data_type)).itemsize for t in model.graph.initializer}
    initializer_names = set(sizes)
    return _Graph(model, [i.name for i in model.graph.input if i.name not in initializer_names],
                  [o.name for o in model.graph.output], sizes)


def plan(graph: _Graph, stages: int) -> list[int]:
    """Node indices where stages end (exclusive), balancing weight bytes over `stages` stages."""
    nodes = list(graph.model.graph.node)
    weights = np.array([sum(graph.initializers.get(name, 0) for name in node.input) for node in nodes], dtype=float)
    cumulative = np.cumsum(weights) / max(weights.sum(), 1.0)
    candidates = [i + 1 for i, node in enumerate(nodes) if node.op_type in BOUNDARY_OPS and i + 1 < len(nodes)]
    if len(candidates) < stages - 1:
        raise ShardError(f"the graph has {len(candidates)} layer boundaries; cannot cut it into {stages} stages")
    ends: list[int] = []
    for j in range(1, stages):
        remaining = [c for c in candidates if not ends or c > ends[-1]]
        # leave enough boundaries for the stages still to place
        usable = remaining[: len(remaining) - (stages - 1 - j)] if stages - 1 - j else remaining
        ends.append(min(usable, key=lambda c: abs(cumulative[c - 1] - j / stages)))
    return [*ends, len(nodes)]


def _cut_types(graph: _Graph, names: set[str]) -> dict[str, tuple[int, int]]:
    """ONNX element type and rank of each tensor in `names`, read by running the graph once on a small input
    (ONNX Runtime infers types of its contrib ops, which onnx's shape inference does not know)."""
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(graph.model)
    known = {o.name for o in probe.graph.output}
    for name in sorted(names - known):
        probe.graph.output.append(onnx.ValueInfoProto(name=name))
    feeds: dict[str, npt.NDArray[Any]] = {}
    for value in probe.graph.input:
        if value.name in graph.initializers:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else (1 if i == 0 else 8)
                for i, d in enumerate(value.type.tensor_type.shape.dim)]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
        feeds[value.name] = np.ones(dims, dtype=dtype) if np.issubdtype(dtype, np.integer) else np.zeros(dims, dtype)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every named tensor
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    wanted = [o.name for o in session.get_outputs() if o.name in names]
    values = session.run(wanted, feeds)
    return {name: (onnx.helper.np_dtype_to_tensor_dtype(value.dtype), value.ndim)
            for name, value in zip(wanted, values, strict=True)}


def split(path: Path, stages: int, out_dir: Path, relative_to: Path) -> list[StageSpec]:
    """Cut the graph at `path` into `stages` stage graphs under `out_dir`; describe them (files relative to
    `relative_to`, the artifact directory)."""
    import onnx

    if not 2 <= stages <= MAX_STAGES:
        raise ShardError(f"stages must be between 2 and {MAX_STAGES}, got {stages}")
    graph = _load(path)
    nodes = list(graph.model.graph.node)
    ends = plan(graph, stages)
    starts = [0, *ends[:-1]]
    groups = [nodes[a:b] for a, b in zip(starts, ends, strict=True)]
    produced = [{o for n in group for o in n.output if o} for group in groups]
    consumed = [{i for n in group for i in n.input if i and i not in graph.initializers} for group in groups]
    graph_inputs, graph_outputs = set(graph.inputs), set(graph.outputs)

    needed_after: list[set[str]] = []
    for s in range(stages):
        later = set().union(*consumed[s + 1:]) if s + 1 < stages else set()
        needed_after.append({t for t in later if t not in graph_inputs and any(t in p for p in produced[: s + 1])})
    cut = set().union(*needed_after) | {t for s in range(stages) for t in consumed[s] - produced[s] - graph_inputs}
    types = _cut_types(graph, cut | graph_outputs)

    out_dir.mkdir(parents=True, exist_ok=True)
    specs = []
    for s, group in enumerate(groups):
        stage_inputs = sorted(consumed[s] - produced[s])
        outputs = sorted((needed_after[s] | graph_outputs) & produced[s])
        final = sorted(graph_outputs & produced[s])
        missing = [t for t in stage_inputs if t not in graph_inputs and t not in (needed_after[s - 1] if s else set())]
        if missing:
            raise ShardError(f"stage {s}: inputs {missing} come from nowhere (a graph the cutter does not understand)")
        weights = sorted({i for n in group for i in n.input if i in graph.initializers})
        initializers = [t for t in graph.model.graph.initializer if t.name in set(weights)]

        def value_info(name: str) -> Any:
            if name in graph_inputs:
                return next(v for v in graph.model.graph.input if v.name == name)
            elem, rank = types[name]
            return onnx.helper.make_tensor_value_info(name, elem, [f"{name}_d{i}" for i in range(rank)])

        stage_graph = onnx.helper.make_graph(group, f"stage{s}", [value_info(t) for t in stage_inputs],
                                             [value_info(t) for t in outputs], initializer=initializers)
        stage_model = onnx.helper.make_model(stage_graph, opset_imports=list(graph.model.opset_import),
                                             ir_version=graph.model.ir_version)
        file = out_dir / f"stage{s}.onnx"
        data = file.with_name(file.name + ".data")
        for old in (file, data):
            old.unlink(missing_ok=True)
        onnx.save_model(stage_model, str(file), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data.name, size_threshold=1024)
        specs.append(StageSpec(
            file=str(file.relative_to(relative_to)),
            data_files=[str(data.relative_to(relative_to))] if data.exists() else [],
            inputs=stage_inputs, outputs=outputs,
            from_caller=sorted(set(stage_inputs) & graph_inputs),
            forward=sorted(needed_after[s]), final=final,
            weight_bytes=sum(graph.initializers[w] for w in weights), nodes=len(group),
        ))
    produced_outputs = set().union(*(set(s.final) for s in specs))
    if produced_outputs != graph_outputs:
        raise ShardError(f"the stages do not produce {sorted(graph_outputs - produced_outputs)}")
    log.info("cut %s into %d stages: %s", path, stages, ", ".join(f"{s.nodes} nodes/{s.weight_bytes / 2**20:.1f} "
                                                                  "MiB" for s in specs))
    return specs


# ---------------------------------------------------------------------------------------------- execution

Tensors = dict[str, npt.NDArray[Any]]


def run_stage(session: Any, spec: StageSpec, received: Tensors, direct: Tensors) -> tuple[Tensors, Tensors]:
    """One stage on one feed: (what it forwards to the next stage, the model outputs it produced).
    `session`: the stage's ONNX Runtime InferenceSession."""
    env = {**received, **direct}
    values = session.run(spec.outputs, {name: env[name] for name in spec.inputs})
    env.update(zip(spec.outputs, values, strict=True))
    return {name: env[name] for name in spec.forward}, {name: env[name] for name in spec.final}


def caller_inputs(specs: Sequence[StageSpec], feeds: Tensors) -> list[Tensors]:
    """Per stage, the model inputs the caller sends it directly."""
    return [{name: feeds[name] for name in spec.from_caller} for spec in specs]


class LocalStages:
    """The stage chain in this process (tests, the benchmark's reference): same `run_stage` as the actors."""

    def __init__(self, root: Path, specs: Sequence[StageSpec], output_names: Sequence[str], device: str = "cpu",
                 intra_op_threads: int | None = 1) -> None:
        from unison.model.runtime import create_session

        self.specs = list(specs)
        self.output_names = list(output_names)
        self.device = device
        self.sessions = [create_session(root / spec.file, device, intra_op_threads) for spec in self.specs]  # type: ignore[arg-type]

    def run(self, feeds: Tensors) -> list[npt.NDArray[Any]]:
        received: Tensors = {}
        outputs: Tensors = {}
        for session, spec, direct in zip(self.sessions, self.specs, caller_inputs(self.specs, feeds), strict=True):
            received, final = run_stage(session.inner, spec, received, direct)
            outputs.update(final)
        return [outputs[name] for name in self.output_names]

    def run_many(self, feeds: Sequence[Tensors]) -> list[list[npt.NDArray[Any]]]:
        """The chain protocol the Predictor calls (as `unison.model.chain.StageChain`)."""
        return [self.run(f) for f in feeds]

    def close(self) -> None:
        self.sessions = []


def whole_graph(file: str, input_names: Sequence[str], output_names: Sequence[str]) -> StageSpec:
    """The unsharded graph as a one-stage chain (the K = 1 reference of the benchmark)."""
    return StageSpec(file=file, inputs=list(input_names), outputs=list(output_names), from_caller=list(input_names),
                     forward=[], final=list(output_names), weight_bytes=0, nodes=0)

"""A sharded model's stages as Ray actors, one per placement-group bundle (one per device).

The caller (a Serve replica, the benchmark) sends each stage only the model inputs it reads; what a stage
forwards goes to the next stage as an ObjectRef, so hidden states move actor to actor through Ray's object
transfer (zero-copy within a node, the object manager across nodes), never through the caller or JSON.

Placement: inside a Serve replica whose deployment declares `placement_group_bundles` (rendered by
`unison serve up` when `model.stages` > 1: the replica's bundle, then one bundle per stage), stage i runs in
bundle i + 1 of the replica's placement group, so Serve creates and removes the group with the replica.
Elsewhere the chain creates its own group (`model.stage_placement`: PACK on one machine, STRICT_SPREAD for one
stage per GPU node) and removes it on `close`.
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy.typing as npt

from unison.model.shard import StageSpec, Tensors, caller_inputs, run_stage

log = logging.getLogger(__name__)


class StageWorker:
    """One stage's ONNX Runtime session (a Ray actor: `ray.remote(StageWorker)`)."""

    def __init__(self, root: str, spec: dict[str, Any], device: str, threads: int | None, parallel: int) -> None:
        from unison.model.runtime import create_session

        self.spec = StageSpec.model_validate(spec)
        self.session = create_session(Path(root) / self.spec.file, device, threads)  # type: ignore[arg-type]
        self.pool = ThreadPoolExecutor(parallel, thread_name_prefix="stage")
        self.feeds = 0
        self.forwarded_bytes = 0
        self.seconds = 0.0

    def run(self, received: list[Tensors] | None, direct: list[Tensors]) -> Any:
        """Every feed of a call (rows or padded buckets), each on its own. Returns what the chain needs next:
        the forwarded tensors per feed, the model outputs per feed, or both (one object fewer per hop when a
        stage has only one of them, which is the usual case)."""
        started = time.perf_counter()
        inputs = received if received is not None else [{} for _ in direct]
        if len(direct) == 1:
            results = [run_stage(self.session.inner, self.spec, inputs[0], direct[0])]
        else:
            results = list(self.pool.map(lambda pair: run_stage(self.session.inner, self.spec, *pair),
                                         zip(inputs, direct, strict=True)))
        self.seconds += time.perf_counter() - started
        self.feeds += len(direct)
        forwarded = [r[0] for r in results]
        self.forwarded_bytes += sum(int(v.nbytes) for tensors in forwarded for v in tensors.values())
        if not self.spec.final:
            return forwarded
        if not self.spec.forward:
            return [r[1] for r in results]
        return forwarded, [r[1] for r in results]

    def where(self) -> dict[str, Any]:
        """Where this stage runs: node, process, devices, provider, and its counters."""
        import ray

        context = ray.get_runtime_context()
        return {"node_id": context.get_node_id(), "pid": os.getpid(), "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
                "provider": self.session.providers[0], "file": self.spec.file, "weight_bytes": self.spec.weight_bytes,
                "feeds": self.feeds, "forwarded_bytes": self.forwarded_bytes, "seconds": round(self.seconds, 3)}


class StageChain:
    """Runs feeds through the stage actors; `run_many` has the shape the Predictor needs."""

    def __init__(self, root: Path, specs: list[StageSpec], output_names: list[str], device: str = "cpu",
                 resources: dict[str, float] | None = None, strategy: str = "PACK", threads: int | None = 1,
                 parallel: int = 2, timeout_s: float = 120.0) -> None:
        import ray
        from ray.util.placement_group import get_current_placement_group, placement_group, remove_placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        self.specs = specs
        self.output_names = output_names
        self.device = device
        self.timeout_s = timeout_s
        resources = dict(resources or {"CPU": 0.1})
        current = get_current_placement_group()
        offset = 0
        self._own = None
        if current is not None and len(current.bundle_specs) >= len(specs) + 1:
            group, offset = current, 1  # Serve's group for this replica: bundle 0 is the replica itself
        else:
            group = self._own = placement_group([resources] * len(specs), strategy=strategy,
                                                name=f"unison-stages-{os.getpid()}-{id(self)}")
            try:
                ray.get(group.ready(), timeout=timeout_s)
            except Exception:
                remove_placement_group(group)
                raise RuntimeError(f"no room for {len(specs)} stage bundles of {resources} with {strategy} within "
                                   f"{timeout_s:.0f} s (STRICT_SPREAD needs one node per stage)") from None
        self.group = group
        self.bundle_offset = offset
        # Each actor takes half its bundle, so the next version's chain (a promote) starts before the old one
        # is released; on a GPU bundle, half a GPU still pins the actor to that bundle's device.
        cpus, gpus = float(resources.get("CPU", 0.0)) / 2, float(resources.get("GPU", 0.0)) / 2
        custom = {k: v / 2 for k, v in resources.items() if k not in ("CPU", "GPU")}
        worker = ray.remote(StageWorker)
        self.actors = [
            worker.options(num_cpus=cpus, num_gpus=gpus, resources=custom or None, max_concurrency=4,
                           scheduling_strategy=PlacementGroupSchedulingStrategy(
                               placement_group=group, placement_group_bundle_index=offset + i),
                           ).remote(str(root), spec.model_dump(), device, threads, parallel)
            for i, spec in enumerate(specs)
        ]
        self.placement = ray.get([a.where.remote() for a in self.actors], timeout=timeout_s)
        try:  # Serve's group for the replica carries the deployment's placement_group_strategy
            self.strategy = str(ray.util.placement_group_table(group).get("strategy", strategy))
        except Exception:
            self.strategy = strategy
        log.info("stage chain of %d on nodes %s", len(specs), [p["node_id"][:8] for p in self.placement])

    def run_many(self, feeds: list[Tensors]) -> list[list[npt.NDArray[Any]]]:
        """Model outputs (in `output_names` order) for each feed."""
        import ray

        split_feeds = [caller_inputs(self.specs, f) for f in feeds]
        per_stage = [[parts[s] for parts in split_feeds] for s in range(len(self.specs))]
        forwarded: Any = None
        finals = []
        for actor, spec, direct in zip(self.actors, self.specs, per_stage, strict=True):
            if spec.forward and spec.final:
                forwarded, final = actor.run.options(num_returns=2).remote(forwarded, direct)
                finals.append(final)
            elif spec.final:
                finals.append(actor.run.remote(forwarded, direct))
            else:
                forwarded = actor.run.remote(forwarded, direct)
        merged: list[dict[str, Any]] = [{} for _ in feeds]
        for stage_outputs in ray.get(finals, timeout=self.timeout_s):
            for target, outputs in zip(merged, stage_outputs, strict=True):
                target.update(outputs)
        return [[m[name] for name in self.output_names] for m in merged]

    def describe(self) -> list[dict[str, Any]]:
        """Per stage: bundle, node, devices, provider, weights, counters (for status)."""
        import ray

        rows = ray.get([a.where.remote() for a in self.actors], timeout=self.timeout_s)
        return [{"stage": i, "bundle": i + self.bundle_offset, **row} for i, row in enumerate(rows)]

    def close(self) -> None:
        import ray
        from ray.util.placement_group import remove_placement_group

        for actor in self.actors:
            ray.kill(actor)
        self.actors = []
        if self._own is not None:
            remove_placement_group(self._own)
            self._own = None

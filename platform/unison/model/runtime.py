"""ONNX Runtime sessions: provider selection with a logged fallback, explicit threads, and IOBinding.

The GPU branch is small on purpose: CUDA is used only when asked for and present; everything else (binding
inputs and preallocated outputs, thread settings) runs the same way on the CPU provider, so CI exercises it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

Device = Literal["cpu", "cuda"]
CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


class RuntimeUnavailable(RuntimeError):
    """ONNX Runtime is not installed: install the `cpu` or the `gpu` extra."""


def _ort():  # type: ignore[no-untyped-def]
    try:
        import onnxruntime
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeUnavailable(
            "onnxruntime is not installed: `pip install 'unison[cpu]'` (or 'unison[gpu]' on a CUDA machine)"
        ) from exc
    return onnxruntime


def select_providers(device: Device, available: list[str] | None = None) -> tuple[list[str], str]:
    """Providers to ask for, and a sentence saying why (logged, and shown in status)."""
    available = available if available is not None else list(_ort().get_available_providers())
    if device == "cuda":
        if CUDA in available:
            return [CUDA, CPU], "CUDA requested and available"
        return [CPU], f"CUDA requested but not available (providers: {', '.join(available)}); falling back to CPU"
    return [CPU], "CPU requested"


@dataclass
class Session:
    """One inference session and how it was made."""

    path: Path
    providers: list[str]
    reason: str
    intra_op_threads: int
    inner: object = field(repr=False)

    @property
    def device(self) -> Device:
        return "cuda" if self.providers[0] == CUDA else "cpu"

    def input_names(self) -> list[str]:
        return [i.name for i in self.inner.get_inputs()]  # type: ignore[attr-defined]

    def run(self, feeds: dict[str, npt.NDArray]) -> list[npt.NDArray]:
        return self.inner.run(None, feeds)  # type: ignore[attr-defined,no-any-return]


def create_session(path: Path, device: Device = "cpu", intra_op_threads: int | None = None,
                   inter_op_threads: int = 1) -> Session:
    ort = _ort()
    providers, reason = select_providers(device)
    options = ort.SessionOptions()
    threads = intra_op_threads or os.cpu_count() or 1
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = inter_op_threads
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    inner = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    actual = inner.get_providers()
    if CUDA in providers and actual[0] != CUDA:
        reason = f"CUDA provider failed to initialise (got {actual}); running on CPU"
    level = logging.WARNING if device == "cuda" and actual[0] != CUDA else logging.INFO
    log.log(level, "onnxruntime session for %s on %s: %s (intra-op threads %d)", path.name, actual[0], reason, threads)
    return Session(path=path, providers=list(actual), reason=reason, intra_op_threads=threads, inner=inner)


class BoundRunner:
    """Runs a session through IOBinding: inputs bound once, outputs preallocated per batch shape and reused.

    On CUDA the inputs are copied to the device once and outputs stay there until one copy back; on CPU the
    same calls bind host memory, so this path is tested on machines without a GPU.
    """

    def __init__(self, session: Session, output_widths: dict[str, int | None]) -> None:
        self.session = session
        self.output_widths = output_widths  # output name -> trailing dimension (None for [batch])
        self._outputs: dict[int, dict[str, npt.NDArray[np.float32]]] = {}

    def _preallocated(self, rows: int) -> dict[str, npt.NDArray[np.float32]]:
        if rows not in self._outputs:
            self._outputs[rows] = {
                name: np.empty((rows,) if width is None else (rows, width), dtype=np.float32)
                for name, width in self.output_widths.items()
            }
        return self._outputs[rows]

    def run(self, feeds: dict[str, npt.NDArray]) -> dict[str, npt.NDArray[np.float32]]:
        """Outputs for `feeds`; the arrays are reused by the next call of the same batch size, so copy them."""
        ort = _ort()
        inner = self.session.inner
        binding = inner.io_binding()  # type: ignore[attr-defined]
        rows = next(iter(feeds.values())).shape[0]
        if self.session.device == "cuda":  # pragma: no cover - needs a GPU
            for name, value in feeds.items():
                binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(value, "cuda", 0))
            for name in self.output_widths:
                binding.bind_output(name, "cuda", 0)
            inner.run_with_iobinding(binding)  # type: ignore[attr-defined]
            values = binding.copy_outputs_to_cpu()
            return dict(zip(self.output_widths, values, strict=True))
        for name, value in feeds.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(value))
        outputs = self._preallocated(rows)
        for name, array in outputs.items():
            binding.bind_output(name, "cpu", 0, np.float32, list(array.shape), array.ctypes.data)
        inner.run_with_iobinding(binding)  # type: ignore[attr-defined]
        return outputs

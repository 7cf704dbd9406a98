"""`unison models list | show | promote | verify`: the model registry."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Annotated

import typer

from unison.cli.common import _fail, _settings, console, print_all
from unison.cli.format import format_manifest, format_models
from unison.domain import DEFAULT_ALIAS

if TYPE_CHECKING:
    from unison.model.manifest import Manifest
    from unison.model.registry import Registry

app = typer.Typer(help="The model registry: versioned, checksummed artifacts and their aliases.",
                  no_args_is_help=True)


def _registry() -> Registry:
    from unison.model.registry import Registry

    return Registry(_settings().model.registry_dir)


def _listing(registry: Registry) -> Iterator[tuple[str, str, Mapping[str, str], Manifest | Exception]]:
    """Every (name, version, the name's aliases, its manifest or why it cannot be read)."""
    for name in registry.models():
        aliases = registry.aliases(name)
        for version in registry.versions(name):
            try:
                manifest: Manifest | Exception = registry.manifest(f"{name}:{version}")
            except Exception as exc:  # a broken artifact is listed, not fatal
                manifest = exc
            yield name, version, aliases, manifest


@app.command("list")
def models_list() -> None:
    """Every model and version with its aliases, variants, sizes and evaluation accuracy."""
    registry = _registry()
    console.print(format_models(registry.root, list(_listing(registry))))


@app.command("show")
def models_show(
    ref: Annotated[str, typer.Argument(help="name, name:alias or name:version (e.g. triage:production).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole manifest.")] = False,
) -> None:
    """One version: source, inputs and outputs, variants with their quality gates and benchmark."""
    from unison.model.registry import ArtifactError, RegistryError

    registry = _registry()
    try:
        manifest = registry.manifest(ref)
    except (RegistryError, ArtifactError) as exc:
        _fail(str(exc), code=2)
    if as_json:
        console.print_json(manifest.model_dump_json())
        return
    print_all(format_manifest(manifest))
    report = registry.root / manifest.name / manifest.version / "report" / "benchmark.md"
    if report.exists():
        console.print(report.read_text(), markup=False, highlight=False)


@app.command("promote")
def models_promote(
    ref: Annotated[str, typer.Argument(help="The version to promote, e.g. triage:3 or triage:latest.")],
    alias: Annotated[str, typer.Option(help="Alias to move.")] = DEFAULT_ALIAS,
) -> None:
    """Point an alias (default `production`) at a version, after verifying its checksums."""
    from unison.domain import ModelRef
    from unison.model.registry import ArtifactError, RegistryError

    registry = _registry()
    try:
        parsed = ModelRef.parse(ref)
        aliases = registry.promote(parsed.name, parsed.tag or "latest", alias)
    except (ValueError, RegistryError, ArtifactError) as exc:
        _fail(str(exc), code=2)
    console.print(f"  {parsed.name}: " + ", ".join(f"{k} -> {v}" for k, v in sorted(aliases.items())))


@app.command("verify")
def models_verify(
    ref: Annotated[str, typer.Argument(help="name, name:alias or name:version.")],
) -> None:
    """Check the sha256 of every file of a version; exit 1 naming the first file that does not match."""
    from unison.model.registry import ArtifactError, RegistryError

    try:
        artifact = _registry().load(ref)
    except (RegistryError, ArtifactError) as exc:
        _fail(str(exc))
    console.print(f"  {artifact.ref}: {len(artifact.manifest.files)} files verified")

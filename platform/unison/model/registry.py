"""The model registry: `<root>/<name>/<version>/` artifacts with a manifest, plus aliases such as `production`.

Registration is atomic (an artifact is staged beside its final place and renamed in), so a crash never leaves
a partial version. Loading verifies the sha256 of every file it will use and refuses anything else.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from unison.domain import DEFAULT_ALIAS, LATEST, ModelRef, alias_problem, is_model_name, is_version
from unison.model.manifest import MANIFEST_FILE, Manifest

ALIASES_FILE = "aliases.json"


class ArtifactError(RuntimeError):
    """An artifact is missing, partial or tampered with; the message names the file."""


class RegistryError(LookupError):
    """A model, version or alias does not exist; the message lists what does."""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Artifact:
    """A registered, verified model version."""

    path: Path
    manifest: Manifest

    @property
    def ref(self) -> str:
        return f"{self.manifest.name}:{self.manifest.version}"

    def file(self, relative: str) -> Path:
        return self.path / relative

    def variant_files(self, variant: str) -> list[str]:
        if variant not in self.manifest.variants:
            raise ArtifactError(
                f"{self.ref} has no variant {variant!r}; it has {', '.join(sorted(self.manifest.variants))}"
            )
        info = self.manifest.variants[variant]
        return [info.file, *info.data_files]

    def verify(self, variants: list[str] | None = None) -> None:
        """Check the sha256 of the tokenizer files and of the given variants' files (all when None)."""
        wanted = list(self.manifest.tokenizer_files)
        for variant in variants if variants is not None else list(self.manifest.variants):
            wanted += self.variant_files(variant)
        for relative in wanted:
            expected = self.manifest.files.get(relative)
            if expected is None:
                raise ArtifactError(f"{self.ref}: {relative} is not listed in the manifest's checksums")
            path = self.path / relative
            if not path.is_file():
                raise ArtifactError(f"{self.ref}: {relative} is missing (partial artifact at {self.path})")
            actual = sha256_file(path)
            if actual != expected:
                raise ArtifactError(
                    f"{self.ref}: checksum mismatch for {relative} (expected {expected[:12]}..., got "
                    f"{actual[:12]}...): the file was modified or truncated; refusing to load it"
                )


@dataclass(frozen=True)
class Selection:
    """The version a reference selects, and the alias it went through (`latest` included; None: an exact version)."""

    version: str
    alias: str | None


def select(ref: ModelRef, versions: list[str], aliases: dict[str, str], default_alias: str = DEFAULT_ALIAS,
           ) -> Selection:
    """The alias rules, the one place they are written (the registry and the serving router both call this):
    a version number selects that version; `latest` the newest; an alias its version; no tag `default_alias` when
    the model has it, else the newest. RegistryError, listing what exists, when nothing matches."""
    name = ref.name
    if not versions:
        raise RegistryError(f"model {name!r} has no registered versions")
    if ref.version is not None:
        if ref.version not in versions:
            raise RegistryError(f"model {name!r} has no version {ref.version!r}; {_existing(versions, aliases)}")
        return Selection(ref.version, None)
    alias = ref.alias or (default_alias if default_alias in aliases else LATEST)
    if alias == LATEST:
        return Selection(versions[-1], alias)
    if alias not in aliases:
        raise RegistryError(f"model {name!r} has no alias {alias!r}; {_existing(versions, aliases)}")
    return Selection(aliases[alias], alias)


def _existing(versions: list[str], aliases: dict[str, str]) -> str:
    return (f"versions: {', '.join(versions)}; "
            f"aliases: {', '.join(f'{k}->{v}' for k, v in sorted(aliases.items())) or 'none'}")


class Registry:
    """A directory of versioned artifacts. Versions are 1, 2, 3, ... per model name."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # ------------------------------------------------------------------------------------------ reading

    def models(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and is_model_name(p.name))

    def versions(self, name: str) -> list[str]:
        directory = self.root / name
        if not directory.is_dir():
            return []
        found = [p.name for p in directory.iterdir() if p.is_dir() and is_version(p.name)]
        return sorted(found, key=int)

    def aliases(self, name: str) -> dict[str, str]:
        path = self.root / name / ALIASES_FILE
        return json.loads(path.read_text()) if path.exists() else {}

    def resolve(self, ref: str | ModelRef) -> tuple[str, str]:
        """`name`, `name:alias`, `name:version` or `name:latest` (`unison.domain.ModelRef`) -> (name, version).
        Plain `name` means production, else the latest version (`select`)."""
        try:
            parsed = ref if isinstance(ref, ModelRef) else ModelRef.parse(ref)
        except ValueError as exc:
            raise RegistryError(str(exc)) from None
        name = parsed.name
        if name not in self.models():
            known = ", ".join(self.models()) or "none"
            raise RegistryError(f"unknown model {name!r} in registry {self.root} (models: {known})")
        return name, select(parsed, self.versions(name), self.aliases(name)).version

    def manifest(self, ref: str) -> Manifest:
        name, version = self.resolve(ref)
        path = self.root / name / version / MANIFEST_FILE
        if not path.is_file():
            raise ArtifactError(f"{name}:{version} has no {MANIFEST_FILE} (partial artifact at {path.parent})")
        try:
            return Manifest.model_validate_json(path.read_text())
        except ValueError as exc:
            raise ArtifactError(f"{name}:{version}: unreadable {MANIFEST_FILE}: {exc}") from None

    def load(self, ref: str, variants: list[str] | None = None) -> Artifact:
        """Resolve `ref` and verify the files of `variants` (all when None) before handing the artifact out."""
        name, version = self.resolve(ref)
        manifest = self.manifest(f"{name}:{version}")
        if (manifest.name, manifest.version) != (name, version):
            raise ArtifactError(
                f"{name}:{version}: manifest says {manifest.name}:{manifest.version}; the artifact was moved by hand"
            )
        artifact = Artifact(self.root / name / version, manifest)
        artifact.verify(variants)
        return artifact

    def find(self, name: str, fingerprint: str) -> str | None:
        """The newest version of `name` built from exactly the same inputs, if any."""
        for version in reversed(self.versions(name)):
            try:
                if self.manifest(f"{name}:{version}").fingerprint == fingerprint:
                    return version
            except ArtifactError:
                continue
        return None

    # ------------------------------------------------------------------------------------------ writing

    @contextmanager
    def _locked(self, name: str) -> Iterator[None]:
        directory = self.root / name
        directory.mkdir(parents=True, exist_ok=True)
        with open(directory / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def staging_dir(self, name: str) -> Path:
        """A fresh directory on the registry's filesystem to build an artifact in (renamed in on register)."""
        if not is_model_name(name):
            raise RegistryError(f"invalid model name {name!r}: use lowercase letters, digits, '-' and '_'")
        path = self.root / name / f".staging-{uuid.uuid4().hex}"
        path.mkdir(parents=True)
        return path

    def register(self, staging: Path, manifest: Manifest) -> Artifact:
        """Checksum every file in `staging`, write the manifest, and move it in as the next version."""
        files = {
            str(p.relative_to(staging)): sha256_file(p)
            for p in sorted(staging.rglob("*"))
            if p.is_file() and p.name != MANIFEST_FILE
        }
        declared = set(manifest.tokenizer_files)
        for info in manifest.variants.values():
            declared.update([info.file, *info.data_files])
        missing = sorted(declared - set(files))
        if missing:
            raise ArtifactError(f"cannot register {manifest.name}: declared files missing from staging: {missing}")
        with self._locked(manifest.name):
            versions = self.versions(manifest.name)
            version = str(int(versions[-1]) + 1 if versions else 1)
            final = manifest.model_copy(update={"version": version, "files": files})
            (staging / MANIFEST_FILE).write_text(final.model_dump_json(indent=2))
            target = self.root / manifest.name / version
            os.rename(staging, target)
        return Artifact(target, final)

    def copy(self, ref: str, name: str | None = None) -> Artifact:
        """Register the files of `ref` again, as the next version of `name` (default: the same model).

        The copy is verified first; hard links are used where the filesystem allows, so a copy costs no space.
        """
        source = self.load(ref)
        target_name = name or source.manifest.name
        staging = self.staging_dir(target_name)
        try:
            for path in sorted(source.path.rglob("*")):
                if path.is_file() and path.name != MANIFEST_FILE:
                    destination = staging / path.relative_to(source.path)
                    destination.parent.mkdir(parents=True, exist_ok=True)
                    try:
                        os.link(path, destination)
                    except OSError:
                        shutil.copy2(path, destination)
            return self.register(staging, source.manifest.model_copy(update={"name": target_name}))
        except BaseException:
            self.discard(staging)
            raise

    def promote(self, name: str, version: str, alias: str = DEFAULT_ALIAS) -> dict[str, str]:
        """Point `alias` at `version` (atomically); return all aliases of `name`."""
        problem = alias_problem(alias)
        if problem is not None:
            raise RegistryError(problem)
        resolved_name, resolved = self.resolve(f"{name}:{version}")
        self.load(f"{resolved_name}:{resolved}")  # never promote a broken artifact
        with self._locked(name):
            aliases = self.aliases(name)
            aliases[alias] = resolved
            path = self.root / name / ALIASES_FILE
            tmp = path.with_suffix(f".{uuid.uuid4().hex}.tmp")
            tmp.write_text(json.dumps(aliases, indent=2, sort_keys=True))
            os.replace(tmp, path)
        return aliases

    def discard(self, staging: Path) -> None:
        shutil.rmtree(staging, ignore_errors=True)

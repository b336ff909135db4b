"""The report's folder: written whole or not at all, and never over a file the report did not write.

A report folder holds a manifest, ``.steelseg-report.json``: every file the report wrote there,
with its SHA-256. A new report may replace a file only when the manifest lists it with the digest
it still has (the report wrote it and nobody changed it since); any other file in the way is the
user's, and is replaced only with ``force``. Files beside them that the report does not write are
never touched. The report is first written into a staging folder beside ``out``; only when it is
complete is it checked against what is in ``out`` and moved in, file by file (each an atomic
rename), with the manifest naming the new files before they land.

Example:
    >>> folder = ReportFolder(Path("report"))  # doctest: +SKIP
    >>> folder.check(["report.md"])  # raises ConfigError if report.md is not the report's own  # doctest: +SKIP
    >>> with folder.staging() as stage:  # doctest: +SKIP
    ...     (stage / "report.md").write_text("# report")
"""
from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from steelseg_hpc.core.errors import ConfigError
from steelseg_hpc.core.io import atomic_write_bytes, atomic_write_json, sha256_file

#: The manifest of the files a report wrote into its folder (relative path -> SHA-256).
MANIFEST = ".steelseg-report.json"
_WRITER = "steelseg-hpc report"


class ReportFolder:
    """``out``, as the report may write it (see the module docstring)."""

    def __init__(self, out: Path, force: bool = False):
        self.out, self.force = Path(out), force

    def _manifest(self) -> dict[str, str]:
        try:
            manifest = json.loads((self.out / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        files = manifest.get("files") if isinstance(manifest, dict) and manifest.get("written_by") == _WRITER else None
        return {str(name): str(digest) for name, digest in files.items()} if isinstance(files, dict) else {}

    def _ours(self, name: str, manifest: dict[str, str]) -> bool:
        target = self.out / name
        try:
            return not target.is_symlink() and manifest.get(name) == sha256_file(target)
        except OSError:
            return False

    def check(self, names: Iterable[str]) -> None:
        """Refuse when writing ``names`` (relative to ``out``) would replace a file the report did not write.

        Raises:
            ConfigError: ``out`` or a folder on the way is a file, a name is a folder, or, without
                ``force``, a file in the way is not the report's own (or was changed since).
        """
        if self.out.exists() and not self.out.is_dir():
            raise ConfigError(f"--out {self.out} is a file; expected a new folder or one the report wrote")
        manifest, foreign = self._manifest(), []
        for name in sorted(names):
            for folder in reversed(Path(name).parents[:-1]):
                if (self.out / folder).exists() and not (self.out / folder).is_dir():
                    raise ConfigError(f"--out {self.out}: {folder} is a file, where the report writes a folder")
            target = self.out / name
            if target.is_dir():
                raise ConfigError(f"--out {self.out}: {name} is a folder, where the report writes a file")
            if (target.exists() or target.is_symlink()) and not self._ours(name, manifest):
                foreign.append(name)
        if foreign and not self.force:
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            raise ConfigError(f"--out {self.out}: {shown} {'was' if len(foreign) == 1 else 'were'} not written by "
                              "the report (or changed since) and would be replaced: choose a new folder, or pass "
                              "--force to replace them")

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        """A folder to write the whole report into; moved into ``out`` when the block ends without error."""
        self.out.parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.staging-", dir=self.out.parent))
        try:
            yield stage
            self._publish(stage)
        finally:
            shutil.rmtree(stage, ignore_errors=True)

    def _publish(self, stage: Path) -> None:
        staged = {path.relative_to(stage).as_posix(): path for path in sorted(stage.rglob("*")) if path.is_file()}
        self.check(staged)
        manifest = self._manifest()
        kept = {name: digest for name, digest in manifest.items() if name not in staged and self._ours(name, manifest)}
        written = {name: sha256_file(path) for name, path in staged.items()}
        # Named before they land: a crash half-way leaves files the next report may still replace.
        atomic_write_json(self.out / MANIFEST, {"written_by": _WRITER, "files": {**kept, **written}})
        for name, path in staged.items():
            atomic_write_bytes(self.out / name, path.read_bytes())  # a rename: a link is replaced, not followed

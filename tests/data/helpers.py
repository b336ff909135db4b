"""Helpers for data tests: copy a raw dataset, edit its spec, snapshot a store."""
from __future__ import annotations

import shutil
from pathlib import Path


def copy_raw(spec_path: Path, dest: Path) -> Path:
    shutil.copytree(spec_path.parent, dest)
    return dest / "spec.toml"


def edit_spec(spec_path: Path, old: str, new: str) -> None:
    text = spec_path.read_text()
    assert old in text, f"{old!r} not in spec"
    spec_path.write_text(text.replace(old, new, 1))


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` with its size and modification time."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}

"""Checkpoint bookkeeping: atomic saves, ``latest`` / ``best`` pointers, pruning and fallback.

Layout under ``RUN_DIR/checkpoints``::

    latest              text file naming the newest complete checkpoint (replaced atomically)
    best                text file naming the checkpoint with the best validation Dice
    epoch0007/          DeepSpeed files of every rank + weights.safetensors (fp32) + meta.json
    epoch0008-mb000040/ a mid-epoch checkpoint: 40 micro-batches into epoch 8 (on preemption),
                        with each rank's running epoch state (``epoch_state_rankNNNN.pt``)
    epoch0008.partial/  a save in progress (or one a crash interrupted; removed on the next save)

Tags order as training progressed: ``epoch0008-mb000040`` comes after ``epoch0007`` and before
``epoch0008``. A mid-epoch checkpoint has no validation score, so it never becomes ``best``; it
is otherwise kept, pruned and verified like any other.

A save writes into ``TAG.partial``, waits for every rank, records a manifest (size and SHA-256 of
every file) in ``meta.json``, renames the folder to ``TAG`` and only then moves the ``latest``
pointer. A crash at any point leaves the previous checkpoint usable, and on resume a checkpoint
whose files no longer match their manifest is skipped in favour of the one before it.

The DeepSpeed calls are injected (``write_fn``), so the logic here is testable without DeepSpeed.

Example:
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> manager = CheckpointManager(root, keep=1)
    >>> manager.save(1, 0.5, lambda folder: (folder / "w.bin").write_bytes(b"1"))
    'epoch0001'
    >>> manager.resume_tag(), manager.best_tag()
    ('epoch0001', 'epoch0001')
"""
from __future__ import annotations

import errno
import json
import logging
import re
import shutil
from pathlib import Path
from typing import Callable

from steelseg_hpc.core.errors import TrainingError
from steelseg_hpc.core.io import atomic_write_json, atomic_write_text, sha256_file

log = logging.getLogger(__name__)

PARTIAL_SUFFIX = ".partial"
META_FILE = "meta.json"
_NEARLY_FULL_MIB = 64
_TAG_RE = re.compile(r"^epoch(\d+)(?:-mb(\d+))?$")


def tag_for_epoch(epoch: int, micro_batches: int | None = None) -> str:
    """``epochNNNN`` after a whole epoch, ``epochNNNN-mbMMMMMM`` ``micro_batches`` into it."""
    return f"epoch{epoch:04d}" if micro_batches is None else f"epoch{epoch:04d}-mb{micro_batches:06d}"


def _progress_key(tag: str) -> tuple[int, float]:
    """Sort key: (epoch, micro-batches done), a finished epoch counting as infinitely many."""
    match = _TAG_RE.match(tag)
    return int(match.group(1)), float(match.group(2)) if match.group(2) else float("inf")


def _manifest(folder: Path) -> dict[str, dict[str, object]]:
    return {
        str(path.relative_to(folder)): {"size": path.stat().st_size, "sha256": sha256_file(path)}
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != META_FILE
    }


class CheckpointManager:
    """Saves, finds and prunes the checkpoints of one run.

    Args:
        root: The ``checkpoints`` folder.
        keep: How many of the newest checkpoints to keep (the best is kept in addition).
        is_main: Whether this process is rank 0 (the only one that renames and prunes).
        barrier: Called where every rank must have finished writing (``dist.barrier``).
    """

    def __init__(self, root: Path, keep: int = 2, is_main: bool = True,
                 barrier: Callable[[], None] = lambda: None):
        # The folder appears with the first save: a run that fails to start leaves nothing behind.
        self.root, self.keep, self.is_main, self.barrier = Path(root), keep, is_main, barrier

    # ----------------------------------------------------------------------------- reading
    def _pointer(self, name: str) -> str | None:
        try:
            tag = (self.root / name).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            return None
        return tag if _TAG_RE.match(tag) else None

    def best_tag(self) -> str | None:
        return self._pointer("best")

    def latest_tag(self) -> str | None:
        return self._pointer("latest")

    def meta(self, tag: str) -> dict | None:
        try:
            return json.loads((self.root / tag / META_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def complete_tags(self) -> list[str]:
        """Tags with a ``meta.json``, newest first (mid-epoch ones before their epoch's end)."""
        tags = [p.name for p in self.root.glob("epoch*") if _TAG_RE.match(p.name) and (p / META_FILE).exists()]
        return sorted(tags, key=_progress_key, reverse=True)

    def any_saved(self) -> bool:
        """Whether any checkpoint was ever completed here (intact or not)."""
        return bool(self.complete_tags()) or self.latest_tag() is not None

    def verify(self, tag: str, contents: bool = True) -> bool:
        """Whether every file of ``tag`` still matches the manifest written when it was saved.

        Args:
            contents: compare each file's SHA-256 (False: only its size, which reads no data;
                what ``launch`` checks on a login node before queueing, the job checks contents).
        """
        meta = self.meta(tag)
        if meta is None or "files" not in meta:
            return False
        folder = self.root / tag
        try:
            if contents:
                return _manifest(folder) == meta["files"]
            sizes = {str(path.relative_to(folder)): path.stat().st_size
                     for path in folder.rglob("*") if path.is_file() and path.name != META_FILE}
            return sizes == {name: entry.get("size") for name, entry in meta["files"].items()}
        except OSError:
            return False

    def resume_choice(self, contents: bool = True) -> tuple[str | None, list[str]]:
        """The checkpoint to resume from (``latest`` if intact, else the newest intact one) and
        the damaged or incomplete ones passed over, newest first (``contents``: see :meth:`verify`)."""
        candidates = self.complete_tags()
        latest = self.latest_tag()
        skipped = []
        if latest in candidates:
            candidates.remove(latest)
            candidates.insert(0, latest)
        elif latest is not None:
            skipped.append(latest)
        for tag in candidates:
            if self.verify(tag, contents):
                return tag, skipped
            skipped.append(tag)
        return None, skipped

    def resume_tag(self, contents: bool = True) -> str | None:
        """The checkpoint to resume from: ``latest`` if intact, else the newest intact one."""
        return self.resume_choice(contents)[0]

    # ----------------------------------------------------------------------------- writing
    def save(self, epoch: int, score: float | None, write_fn: Callable[[Path], None],
             extra_meta: dict | None = None, micro_batches: int | None = None) -> str:
        """Write checkpoint ``epoch`` through ``write_fn(folder)`` on every rank, atomically.

        Args:
            epoch: Completed epochs (names the tag); with ``micro_batches``, the epoch in progress.
            score: Validation Dice; the ``best`` pointer moves when it beats the best so far.
            write_fn: Writes this rank's files into the (existing, empty) folder it is given.
            extra_meta: More fields for ``meta.json``.
            micro_batches: Save a mid-epoch checkpoint this many micro-batches into ``epoch``.
                It has no score (never ``best``) and ``meta.json`` records ``micro_batches``.

        Returns:
            The tag written.
        """
        if micro_batches is not None:
            score = None  # half an epoch has not been validated: it must never become best
            extra_meta = {**(extra_meta or {}), "micro_batches": micro_batches}
        tag = tag_for_epoch(epoch, micro_batches)
        partial = self.root / (tag + PARTIAL_SUFFIX)
        if self.is_main:
            if partial.exists():
                shutil.rmtree(partial)
            partial.mkdir(parents=True)
        self.barrier()
        try:
            write_fn(partial)
        except (OSError, RuntimeError) as exc:
            # torch.save reports a full disk as RuntimeError("... file write failed")
            if self.is_main:
                shutil.rmtree(partial, ignore_errors=True)  # give the space back
            free = shutil.disk_usage(self.root).free / 2**20
            # torch.save's RuntimeError on a full disk carries no errno ("unexpected pos ...")
            full = getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or free < _NEARLY_FULL_MIB
            reason = "no space left on device" if full else str(exc).splitlines()[0]
            raise TrainingError(f"could not write checkpoint {partial} ({reason}; {free:.0f} MiB free there); "
                                "the previous checkpoint is intact: free space and rerun to resume") from None
        self.barrier()
        if self.is_main:
            meta = {"epoch": epoch, "score": score, **(extra_meta or {}), "files": _manifest(partial)}
            atomic_write_json(partial / META_FILE, meta)
            final = self.root / tag
            if final.exists():  # the same epoch trained again after a fallback
                shutil.rmtree(final)
            partial.rename(final)
            atomic_write_text(self.root / "latest", tag + "\n")
            if score is not None and self._is_better(score):
                atomic_write_text(self.root / "best", tag + "\n")
            self.prune()
        self.barrier()
        return tag

    def _is_better(self, score: float) -> bool:
        best = self.best_tag()
        best_meta = self.meta(best) if best else None
        if best_meta is None or best_meta.get("score") is None:
            return True
        return score > best_meta["score"]

    def prune(self) -> None:
        """Remove all but the ``keep`` newest complete checkpoints, the best one and ``latest``."""
        if not self.root.is_dir():
            return
        protected = {self.best_tag(), self.latest_tag()} | set(self.complete_tags()[: self.keep])
        for path in self.root.iterdir():
            stale_partial = path.name.endswith(PARTIAL_SUFFIX)
            stale_tag = _TAG_RE.match(path.name) and path.name not in protected
            if path.is_dir() and (stale_partial or stale_tag):
                shutil.rmtree(path, ignore_errors=True)

"""The run-directory contract: the one place that knows a run directory's files and fields.

The training engine writes a run directory; ``status``, sweeps and the report read it. Both sides
go through this module (it needs neither torch nor Dask), so a file name or a metrics key is
spelled here and nowhere else::

    RUN_DIR/
      config.toml        the resolved run config (training.config.RunConfig)
      run.json           RunInfo: schema version, creation, code and package versions, the data,
                         one entry per start (host, resolved precision, job id)
      metrics.jsonl      one MetricsRow per finished epoch, appended (a torn last line is skipped)
      final.json         FinalSummary, written when the run has stopped for good
      train.log          the engine's log
      STOP               written by whoever wants the run to end at its next step (a sweep's
                         pruner); the run then ends with final.json stopped = "stop-request"
      checkpoints/       the checkpoints (training.checkpoints)
      eval/SPLIT[-tta]/  metrics.json (an evaluation) and overlays/

Readers never fail on a run that is still being written: a missing file is ``None`` or ``[]``,
a half-written last metrics line is skipped, and unknown fields (written by a newer version) are
kept in ``extra``. With ``strict=True`` they tell damage apart from that: a file that is there but
cannot be read, is not JSON, holds a field of the wrong type, or a metrics line other than a torn
(unterminated) last one that is not a row, raises :class:`DamagedRunFile` naming the file.

Example:
    >>> import tempfile
    >>> files = RunFiles(tempfile.mkdtemp())
    >>> append_metrics(files, MetricsRow(epoch=1, step=10, train_loss=0.5, val_dice=0.7))
    >>> [row.val_dice for row in read_metrics(files.path)]
    [0.7]
"""
from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from steelseg_hpc.core.errors import DataError
from steelseg_hpc.core.io import atomic_write_json, atomic_write_text

#: Version of the run-directory layout, written into ``run.json``.
SCHEMA_VERSION = 1


class RunFiles:
    """The paths of one run directory."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.config = self.path / "config.toml"
        self.run_info = self.path / "run.json"
        self.metrics = self.path / "metrics.jsonl"
        self.final = self.path / "final.json"
        self.log = self.path / "train.log"
        self.checkpoints = self.path / "checkpoints"
        # Its presence asks a running run to end at its next optimiser step (a sweep prunes so).
        self.stop_request = self.path / "STOP"
        # Where the ranks of a job agree on their rendezvous port (every node sees the run directory).
        self.rendezvous = self.path / ".rendezvous"

    def eval_dir(self, split: str, tta: bool = False) -> Path:
        """Where ``evaluate`` writes its results for ``split`` (with or without flip TTA)."""
        return self.path / "eval" / (f"{split}-tta" if tta else split)

    def eval_metrics(self, split: str, tta: bool = False) -> Path:
        return self.eval_dir(split, tta) / "metrics.json"

    def overlays(self, split: str, tta: bool = False) -> Path:
        return self.eval_dir(split, tta) / "overlays"

    def __repr__(self) -> str:
        return f"RunFiles({str(self.path)!r})"


class DamagedRunFile(DataError):
    """A run file that is there but cannot be read as what it should be (not a run in progress)."""


Record = TypeVar("Record", bound="_Record")


def _accepted_types(hint: Any) -> tuple[type, ...]:
    """The types a field's JSON value may have (empty: anything)."""
    accepted: list[type] = []
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    for option in typing.get_args(hint) if union else (hint,):
        kind = typing.get_origin(option) or option
        if kind is Any:
            return ()
        accepted += [int, float] if kind is float else [kind]
    return tuple(accepted)


@dataclass
class _Record:
    """A JSON object with known fields; anything else it held is kept in ``extra``."""

    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls) if f.name != "extra")

    @classmethod
    def from_dict(cls: type[Record], data: dict[str, Any], strict: bool = False) -> Record:
        """The record of ``data``; ``strict``: a known field of the wrong type raises ValueError."""
        known = cls.field_names()
        if strict:
            hints = typing.get_type_hints(cls)
            for name in known:
                accepted = _accepted_types(hints[name])
                if name in data and accepted and not isinstance(data[name], accepted):
                    raise ValueError(f"{name}: expected {' or '.join(sorted({t.__name__ for t in accepted}))}, "
                                     f"got {data[name]!r:.40}")
        return cls(**{k: v for k, v in data.items() if k in known},
                   extra={k: v for k, v in data.items() if k not in known})

    def to_dict(self) -> dict[str, Any]:
        values = {name: getattr(self, name) for name in self.field_names()}
        return {**self.extra, **values}


#: ``MetricsRow.point``: a row written at an epoch's end, or at a number of training tiles
#: (``val_every_tiles``), which lands at the same tiles whatever the batch size.
EPOCH_POINT, TILES_POINT = "epoch", "tiles"


@dataclass
class MetricsRow(_Record):
    """One line of ``metrics.jsonl``: a finished epoch, or a validation at a number of training
    tiles (``point = "tiles"``: its ``epoch`` is the one in progress, its ``step`` and
    ``tiles_trained`` say where; it has validation figures and no training ones). Figures are None
    when not measured."""

    epoch: int = 0
    step: int = 0
    train_loss: float | None = None
    train_pixel_accuracy: float | None = None
    train_dice: float | None = None
    train_miou: float | None = None
    train_seconds: float | None = None
    tiles_per_s: float | None = None
    val_loss: float | None = None
    val_pixel_accuracy: float | None = None
    val_dice: float | None = None
    val_miou: float | None = None
    lr: float | None = None
    epoch_seconds: float | None = None
    peak_memory_mb: float | None = None
    noise_scale_b_simple: float | None = None
    noise_scale_g2: float | None = None
    noise_scale_trace: float | None = None
    world_size: int | None = None
    global_batch: int | None = None
    tiles_trained: int | None = None
    compile_seconds: float | None = None  # first step after torch.compile, left out of tiles_per_s
    point: str = EPOCH_POINT


#: The validation figures a run can be judged by (sweep objectives, best-checkpoint choice).
VALIDATION_METRICS = ("val_dice", "val_miou", "val_pixel_accuracy")


#: ``FinalSummary.stopped`` of a run that trained all its epochs.
STOPPED_COMPLETED = "completed"
#: ``FinalSummary.stopped`` of a run stopped early: no better val Dice for ``patience`` epochs.
STOPPED_ON_PATIENCE = "patience"
#: ``FinalSummary.stopped`` of a run ended by its stop-request file.
STOPPED_ON_REQUEST = "stop-request"
#: ``FinalSummary.stopped`` of a run that used up its ``time_budget_s`` of training.
STOPPED_ON_BUDGET = "time-budget"


@dataclass
class FinalSummary(_Record):
    """``final.json``: why and where the run stopped, and its best epoch."""

    run_dir: str = ""
    stopped: str = ""  # STOPPED_COMPLETED, STOPPED_ON_PATIENCE, STOPPED_ON_REQUEST or STOPPED_ON_BUDGET
    epochs_completed: int = 0
    epochs_planned: int | None = None
    best_epoch: int | None = None
    best_val_dice: float | None = None
    best_checkpoint: str | None = None
    last: dict[str, Any] | None = None


@dataclass
class RunInfo(_Record):
    """``run.json``: what a run is, where its data came from, and every start of it."""

    schema_version: int = SCHEMA_VERSION
    created: str = ""
    arch: str | None = None
    git: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, Any] = field(default_factory=dict)
    store: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    starts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def last_start(self) -> dict[str, Any]:
        return self.starts[-1] if self.starts else {}


def _read_text(path: Path, strict: bool) -> str | None:
    """The file's text; None when it is missing (or, unless ``strict``, unreadable)."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:  # a folder, no permission, not text
        if strict:
            raise DamagedRunFile(f"{path}: damaged, cannot be read as text ({type(exc).__name__}: {exc})") from None
        return None


def _read_json(path: Path, strict: bool = False) -> dict[str, Any] | None:
    text = _read_text(path, strict)
    if text is None:
        return None
    try:
        data = json.loads(text)
    except ValueError as exc:
        if strict:
            raise DamagedRunFile(f"{path}: damaged, not JSON ({exc})") from None
        return None
    if not isinstance(data, dict):
        if strict:
            raise DamagedRunFile(f"{path}: damaged, expected a JSON object, got {type(data).__name__}")
        return None
    return data


def _read_record(path: Path, record: type[Record], strict: bool) -> Record | None:
    data = _read_json(path, strict)
    if data is None:
        return None
    try:
        return record.from_dict(data, strict=strict)
    except ValueError as exc:
        raise DamagedRunFile(f"{path}: damaged, {exc}") from None


def read_metrics(run_dir: str | Path, strict: bool = False, every_point: bool = False) -> list[MetricsRow]:
    """Every finished epoch of a run, in order (a torn line, mid-write, is skipped).

    With ``every_point`` the validations at numbers of training tiles (``val_every_tiles``) come
    too, in the order they were written (by ``step``): what steps-to-target is read from.

    A torn line is an unterminated last one: every row is written whole with its newline, so with
    ``strict`` any other line that is not a row means the file is damaged.

    Raises:
        DamagedRunFile: with ``strict``, the file cannot be read, or holds a bad line before its end.
    """
    path = RunFiles(run_dir).metrics
    text = _read_text(path, strict)
    if text is None:
        return []
    *lines, unterminated = text.split("\n")
    rows = []
    for number, line in enumerate([*lines, unterminated], start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            if not isinstance(data, dict):
                raise ValueError(f"expected a JSON object, got {type(data).__name__}")
            rows.append(MetricsRow.from_dict(data, strict=strict))
        except ValueError as exc:
            if strict and number <= len(lines):
                raise DamagedRunFile(f"{path}: damaged, line {number} is not a metrics row ({exc})") from None
    return rows if every_point else [row for row in rows if row.point == EPOCH_POINT]


def append_metrics(files: RunFiles, row: MetricsRow) -> None:
    """Append one epoch's row and flush it to disk before returning."""
    with files.metrics.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(row.to_dict()) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def write_metrics(files: RunFiles, rows: list[MetricsRow]) -> None:
    """Replace ``metrics.jsonl`` with ``rows``, atomically."""
    atomic_write_text(files.metrics, "".join(json.dumps(row.to_dict()) + "\n" for row in rows))


def read_final(run_dir: str | Path, strict: bool = False) -> FinalSummary | None:
    """``final.json``, or None while the run has not stopped for good (``strict``: or damaged)."""
    return _read_record(RunFiles(run_dir).final, FinalSummary, strict)


def write_final(files: RunFiles, summary: FinalSummary) -> None:
    atomic_write_json(files.final, summary.to_dict())


def read_run_info(run_dir: str | Path, strict: bool = False) -> RunInfo | None:
    """``run.json``, or None before the run's first start (``strict``: raises when it is damaged)."""
    return _read_record(RunFiles(run_dir).run_info, RunInfo, strict)


def write_run_info(files: RunFiles, info: RunInfo) -> None:
    atomic_write_json(files.run_info, info.to_dict())


def read_evaluation(run_dir: str | Path, split: str = "test", tta: bool = False,
                    strict: bool = False) -> dict[str, Any] | None:
    """The ``metrics.json`` of an evaluation (see ``inference.evaluate``), or None if not run.

    Raises:
        DamagedRunFile: with ``strict``, the file is there but is no evaluation (its ``overall``
            figures are not a table).
    """
    path = RunFiles(run_dir).eval_metrics(split, tta)
    data = _read_json(path, strict)
    if strict and data is not None and not isinstance(data.get("overall"), dict):
        raise DamagedRunFile(f"{path}: damaged, its 'overall' figures are missing or not a table")
    return data


def best_value(rows: list[MetricsRow], metric: str = "val_dice") -> float | None:
    """The highest ``metric`` over ``rows`` (None when no row has it)."""
    values = [getattr(row, metric) for row in rows if isinstance(getattr(row, metric), (int, float))]
    return max(values) if values else None

"""What a study is a sweep of: one typed record the driver writes and every reader reads.

The driver stores :class:`SweepRecord` in the study's user attributes when it starts; ``sweep
report`` (and anything else that has only the study) reads it back through :func:`read_record`,
so a field's name and type are declared once and a study that lacks the record is named, not
read with made-up defaults.

Example:
    >>> record = SweepRecord(space={"rank": "model.rank"}, metric="val_dice", seeds=[0, 1])
    >>> record.swept_key("model.rank"), record.norm
    ('rank', 'batch')
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from steelseg_hpc.core.errors import DataError

#: The study user attribute that holds the record.
RECORD_ATTR = "sweep"


class SweepRecord(BaseModel):
    """A sweep as its study remembers it.

    Attributes:
        space: Each swept parameter's name and the run-config key it sets.
        metric: The validation metric the trials maximise.
        seeds: The seeds every point is trained with.
        arch: The base run's architecture.
        norm: The base model's normalisation (``batch`` unless the model options say otherwise).
        lr_scaling: How the learning rate follows the global batch (``none``, ``linear``, ``sqrt``).
        base_overrides: The sweep's run-config overrides of every trial.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    space: dict[str, str]
    metric: str
    seeds: list[int] = Field(default_factory=list)
    arch: str | None = None
    norm: str = "batch"
    lr_scaling: str = "none"
    base_overrides: list[str] = Field(default_factory=list)

    def swept_key(self, key: str) -> str | None:
        """The name of the parameter that sets run-config ``key`` (None when nothing does)."""
        return next((name for name, swept in self.space.items() if swept == key), None)


def write_record(study: Any, record: SweepRecord) -> None:
    """Store ``record`` in ``study`` (an Optuna study)."""
    study.set_user_attr(RECORD_ATTR, record.model_dump(mode="json"))


def read_record(study: Any) -> SweepRecord:
    """The record of ``study``.

    Raises:
        DataError: the study has none (it was not made by ``steelseg-hpc sweep``) or a damaged one.
    """
    raw = study.user_attrs.get(RECORD_ATTR)
    if raw is None:
        raise DataError(f"study {study.study_name!r} has no sweep record (user attribute {RECORD_ATTR!r}): "
                        "it was not made by steelseg-hpc sweep, or its driver never started")
    try:
        return SweepRecord.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or RECORD_ATTR
        raise DataError(f"study {study.study_name!r}: its sweep record is damaged ({where}: {first['msg']})") from None

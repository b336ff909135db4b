"""Which runs are seeds of one experiment: runs pool only when nothing but the seed tells them apart.

A run is described by its *experiment fields*: its resolved run config (``config.toml``, as dotted
keys), its store's content (run.json's ``spec_hash``: prep's hash of the spec and of every raw
image and mask; the store's path only where no hash was recorded), how it trained beyond the
config (the world sizes and resolved precisions of its starts, in run.json: the global batch and
``auto`` precision depend on them) and how its test figures were measured (flip TTA, which
checkpoint). Runs with equal fields pool as seeds; two runs with the same seed among them are one
measurement (a copied run directory, or a rerun), counted once.

Left out of the fields, as they change neither the data, the model nor the optimisation:

- ``seed``: what runs are pooled over;
- ``data.store``: a path; the store's content is compared instead (a copied store is the same data);
- ``data.num_workers``, ``data.prefetch_factor``, ``data.pin_memory``, ``progress``: loading and
  display only;
- ``channels_last``, ``compile``, ``model.activation_checkpointing``, ``zero_bucket_elements``: how a
  step is computed, not what (equal within float tolerance; the first three are the keys a run
  may change on resume, ``training.config.RESUMABLE_CHANGES``);
- ``keep_checkpoints``, ``eval.batch_size``, ``eval.overlays``: how many checkpoints stay on disk,
  windows per forward pass and overlay PNGs are written.

A value that cannot be read (a damaged file) is :class:`Unknown`, equal to no other run's value,
so such a run is never pooled with another. Runs on one store, measured one way, are comparable
across architectures (a *cohort*: one comparison table with that store's classes).

These are plain functions of a run's files, for any report that pools seeds.

Example:
    >>> a = {"model.name": "unet3plus", "optimizer.lr": 0.001, "store": "content 1f2e"}
    >>> b = {**a, "optimizer.lr": 0.01}
    >>> pool_key(a) == pool_key(dict(a)), differing([a, b])
    (True, ['optimizer.lr'])
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Collection

from steelseg_hpc.core.rundir import RunFiles, RunInfo
from steelseg_hpc.training.config import RESUMABLE_CHANGES

#: Run-config keys that do not make runs different experiments (see the module docstring).
NOT_COMPARED = frozenset(RESUMABLE_CHANGES | {"seed", "zero_bucket_elements", "keep_checkpoints",
                                              "eval.batch_size", "eval.overlays"})
#: The fields that make runs comparable across architectures (one cohort).
COHORT_FIELDS = ("store", "evaluation")


@dataclass(eq=False, frozen=True)
class Unknown:
    """A field that could not be read: equal only to itself, shown as why."""

    why: str

    def __str__(self) -> str:
        return self.why


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def evaluation_protocol(evaluation: dict[str, Any] | None) -> str:
    """How the test figures were measured; runs without a readable evaluation count as the default."""
    evaluation = evaluation or {}
    return f"{'flip TTA' if evaluation.get('tta') else 'no TTA'}, {evaluation.get('checkpoint_choice', 'best')} checkpoint"


def experiment_fields(config: dict[str, Any] | None, info: RunInfo | None, evaluation: dict[str, Any] | None,
                      damaged: Collection[str] = ()) -> dict[str, Any]:
    """The fields of one run that must be equal for runs to pool (see the module docstring).

    Args:
        config: the resolved run config as a dict (``RunConfig.model_dump(mode="json")``), None when
            unreadable.
        info: the run's ``run.json``, None when missing or unreadable.
        damaged: the run's files (relative names) that are there but damaged: such a run pools with
            no other, and with a damaged ``run.json`` its store is unknown.
    """
    fields: dict[str, Any] = {}
    if config is not None:
        fields.update({key: value for key, value in _flatten(config).items() if key not in NOT_COMPARED})
    store = info.store if info is not None else {}
    if RunFiles("").run_info.name in damaged:
        fields["store"] = Unknown("store unknown")
    elif store.get("spec_hash"):
        fields["store"] = f"content {store['spec_hash']}"
    else:
        fields["store"] = f"at {store.get('path') or (config or {}).get('data', {}).get('store') or '?'}"
    starts = [start for start in (info.starts if info is not None else []) if isinstance(start, dict)]
    hosts = [start.get("host") if isinstance(start.get("host"), dict) else {} for start in starts]
    fields["world size"] = sorted({str(host.get("world_size")) for host in hosts if host.get("world_size")})
    fields["precision"] = sorted({str(start["precision"]) for start in starts if start.get("precision")})
    fields["evaluation"] = evaluation_protocol(evaluation)
    if damaged:
        fields["damaged"] = Unknown(", ".join(damaged) + " damaged")
    return fields


def _frozen(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((key, _frozen(item)) for key, item in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(item) for item in value)
    return value


def pool_key(fields: dict[str, Any]) -> tuple:
    """A hashable key, equal for runs whose fields are equal (an :class:`Unknown` matches nothing else)."""
    return _frozen(fields)


def cohort_key(fields: dict[str, Any]) -> tuple:
    """A hashable key, equal for runs comparable across architectures."""
    return _frozen({name: fields.get(name) for name in COHORT_FIELDS})


def differing(many: list[dict[str, Any]]) -> list[str]:
    """The fields that tell ``many`` apart: keys all have with other values, and unknown ones."""
    shared = set.intersection(*(set(fields) for fields in many)) if many else set()
    keys = {key for key in shared if len({_frozen(fields[key]) for fields in many}) > 1}
    keys |= {key for fields in many for key, value in fields.items() if isinstance(value, Unknown)}
    return sorted(keys, key=lambda key: (key not in COHORT_FIELDS, key))


def describe(fields: dict[str, Any], keys: list[str]) -> str:
    """``key=value, ...`` of ``keys`` in ``fields`` (an unknown one as why it is unknown)."""
    parts = []
    for key in keys:
        if key not in fields:
            continue
        value = fields[key]
        if isinstance(value, Unknown):
            parts.append(str(value))
        elif isinstance(value, list):
            parts.append(f"{key} {'/'.join(map(str, value)) or '?'}")
        elif key in COHORT_FIELDS:
            parts.append(f"{key} {value}")
        else:
            parts.append(f"{key}={value}")
    return ", ".join(parts)

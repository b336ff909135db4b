"""The report's rows: runs pooled as seeds of one experiment, in tables of comparable runs.

Runs pool only when their experiment fields (``report.pooling``) are equal: the same store
content, run config, training setup and evaluation, all but the seed. The same seed twice in a
pool is one measurement, counted once. Pools of one store and evaluation form a *cohort*: one
comparison table with that store's classes, inside which architectures are compared. Every run
not pooled with others of its architecture, and every seed counted once, gets a note saying why.

Example:
    >>> notes = []
    >>> cohorts = group_runs(collect_runs(["smoke"], ExperimentIndex()), notes)  # doctest: +SKIP
    >>> [[group.label for group in cohort.groups] for cohort in cohorts]  # doctest: +SKIP
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from statistics import fmean, stdev
from typing import Any

from steelseg_hpc.models import architectures
from steelseg_hpc.report.collect import RunRecord, registry_field
from steelseg_hpc.report.pooling import COHORT_FIELDS, Unknown, cohort_key, describe, differing, pool_key


def _mean_sd(values: list[float | None]) -> tuple[float | None, float | None]:
    values = [v for v in values if isinstance(v, (int, float))]
    if not values:
        return None, None
    return fmean(values), (stdev(values) if len(values) > 1 else None)


@dataclass
class ArchitectureGroup:
    """The runs of one experiment of an architecture (one per seed) and their pooled figures."""

    arch: str
    runs: list[RunRecord]
    fields: dict[str, Any] = field(default_factory=dict)
    #: What tells it from other groups of its architecture in its table ("" when it is the only one).
    detail: str = ""
    #: Runs of a seed already in ``runs`` (copies or reruns), left out of every figure.
    duplicates: list[RunRecord] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.arch} ({self.detail})" if self.detail else self.arch

    @property
    def unknown(self) -> set[str]:
        """The parts (``collect.UNKNOWN_WHEN_DAMAGED``) some run of it was read from a damaged file."""
        return {part for run in self.runs for part in run.damage}

    def stat(self, getter) -> tuple[float | None, float | None]:
        return _mean_sd([getter(run) for run in self.runs])

    @property
    def family(self) -> str:
        return registry_field(self.arch, "family", self.arch)

    @property
    def variant(self) -> str:
        return registry_field(self.arch, "variant", "")

    @property
    def vanilla(self) -> str | None:
        return registry_field(self.arch, "vanilla", None)

    def per_class_iou(self) -> list[tuple[float | None, float | None]]:
        lists = [(run.evaluation or {}).get("overall", {}).get("iou_per_class") or [] for run in self.runs]
        lists = [values if isinstance(values, list) else [] for values in lists]
        width = max((len(values) for values in lists), default=0)
        return [_mean_sd([values[i] for values in lists if i < len(values)]) for i in range(width)]

    def params(self) -> int | None:
        counts = [run.info.model.get("total_params") for run in self.runs if run.info]
        return next((c for c in counts if c), None)


@dataclass
class Cohort:
    """Groups comparable across architectures: one store, one evaluation; one comparison table."""

    label: str
    class_names: list[str]
    groups: list[ArchitectureGroup]

    def only(self, arch: str | None) -> ArchitectureGroup | None:
        """The group of ``arch`` here when there is one (a comparison with one of several is ambiguous).

        A run with a damaged file stands alone; beside one intact group it does not make it ambiguous.
        """
        matches = [group for group in self.groups if group.arch == arch]
        intact = [group for group in matches if not group.unknown]
        return intact[0] if len(intact) == 1 else (matches[0] if len(matches) == 1 else None)


def _is_where_it_ran(run: RunRecord) -> bool:
    try:
        return bool(run.final and run.final.run_dir) and Path(run.final.run_dir).resolve() == run.path.resolve()
    except (OSError, TypeError, ValueError):
        return False


def _one_per_seed(runs: list[RunRecord], notes: list[str]) -> tuple[list[RunRecord], list[RunRecord]]:
    """The runs with one run per seed (an evaluated one first), and the rest."""
    by_seed: dict[Any, list[RunRecord]] = {}
    for number, run in enumerate(runs):
        by_seed.setdefault(run.seed if run.seed is not None else ("no seed", number), []).append(run)
    kept, duplicates = [], []
    for seed, same in by_seed.items():
        # The original before a copy (its final.json names its own folder), an evaluated one first.
        same = sorted(same, key=lambda run: (run.evaluation is None, not _is_where_it_ran(run)))
        kept.append(same[0])
        duplicates += same[1:]
        if len(same) > 1:
            notes.append(f"{same[0].arch}: {', '.join(str(run.path) for run in same)} are the same seed {seed} of one "
                         f"experiment (a copy of one run directory, or a rerun of it): one measurement, counted "
                         f"once, as {same[0].path}")
    return sorted(kept, key=runs.index), duplicates


def _explain(groups: list[ArchitectureGroup], notes: list[str]) -> None:
    """A note for each architecture whose runs are in several groups, naming what differs."""
    for arch in dict.fromkeys(group.arch for group in groups):
        mine = [group for group in groups if group.arch == arch]
        if len(mine) < 2:
            continue
        keys = differing([group.fields for group in mine])
        parts = [f"{describe(group.fields, keys) or 'the others'}: "
                 f"{', '.join(str(run.path) for run in group.runs + group.duplicates)}" for group in mine]
        what = ", ".join("a damaged file" if key == "damaged" else key for key in keys)
        notes.append(f"{arch}: not pooled, as runs that differ in {what} are not seeds of one "
                     f"experiment: {'; '.join(parts)}")


def _class_names(groups: list[ArchitectureGroup]) -> list[str]:
    runs = [run for group in groups for run in group.runs]
    for names in ([*(run.info.store.get("class_names") for run in runs if run.info)],
                  [*((run.evaluation or {}).get("class_names") for run in runs)]):
        found = next((n for n in names if isinstance(n, list) and n), None)
        if found:
            return [str(name) for name in found]
    return []


def _cohort_label(groups: list[ArchitectureGroup]) -> str:
    fields = groups[0].fields
    if isinstance(fields.get("store"), Unknown):
        return f"store unknown ({', '.join(str(run.path) for group in groups for run in group.runs)})"
    store = next((run.info.store for group in groups for run in group.runs if run.info and run.info.store), {})
    what = f"{store['dataset']!r}, {len(_class_names(groups))} classes, " if store.get("dataset") else ""
    return f"store {what}{fields['store']}{', ' + store['path'] if store.get('path') else ''}; {fields['evaluation']}"


def group_runs(runs: list[RunRecord], notes: list[str]) -> list[Cohort]:
    """The runs pooled per experiment, in tables of comparable runs, the registry's order in each.

    ``notes`` gets a line for every seed counted once and every architecture not pooled as one.
    """
    pools: dict[tuple, list[RunRecord]] = {}
    for run in runs:
        pools.setdefault(pool_key(run.fields), []).append(run)
    groups = []
    for members in pools.values():
        kept, duplicates = _one_per_seed(members, notes)
        groups.append(ArchitectureGroup(members[0].arch, kept, members[0].fields, duplicates=duplicates))
    _explain(groups, notes)
    order = {arch.name: i for i, arch in enumerate(architectures())}
    cohorts: dict[tuple, list[ArchitectureGroup]] = {}
    for group in sorted(groups, key=lambda group: order.get(group.arch, len(order))):
        cohorts.setdefault(cohort_key(group.fields), []).append(group)
    for members in cohorts.values():
        for arch, count in Counter(group.arch for group in members).items():
            same = [group for group in members if group.arch == arch]
            keys = [key for key in differing([group.fields for group in same]) if key not in COHORT_FIELDS]
            for group in same if count > 1 else ():
                group.detail = describe(group.fields, keys)
    single = len(cohorts) == 1
    return [Cohort("" if single else _cohort_label(members), _class_names(members), members)
            for members in cohorts.values()]

"""The report's answers to the lab's "why?" questions, generated from the numbers, never written.

A difference is claimed only when it exceeds the seeds' spread (2 standard deviations of the
difference of the two means, from the seeds of each); with fewer than two seeds on a side, or a
smaller difference, the sentence says "not resolved at n seeds" instead. Costs (training time
per tile, from each run's tiles/s) are stated as ratios, under the same rule across runs.

Example:
    >>> compare("Enhanced vs vanilla U-Net3+", [0.80, 0.82, 0.81], [0.70, 0.71, 0.69])
    'Enhanced vs vanilla U-Net3+: +11.0 Dice points (3 and 3 seeds, sd 1.0 and 1.0 points)'
    >>> compare("Enhanced vs vanilla U-Net3+", [0.80], [0.70])
    'Enhanced vs vanilla U-Net3+: +10.0 Dice points, not resolved at 1 seed (the seed spread is unknown)'
"""
from __future__ import annotations

import math
from statistics import fmean, stdev

from steelseg_hpc.report.collect import RunRecord
from steelseg_hpc.report.groups import ArchitectureGroup, Cohort

_VARIANT_NAMES = {"enhanced": "Enhanced", "enhanced-glu": "Enhanced* (GLU)", "vanilla": "vanilla", "lora": "LoRA"}
_FAMILY_NAMES = {"unet3plus": "U-Net3+", "elunet": "ELU-Net", "sam": "SAM"}


def compare(label: str, better: list[float], baseline: list[float], unit: str = "Dice points") -> str:
    """``label: +x.x Dice points (...)`` when the difference exceeds the seed spread, else unresolved."""
    difference = 100 * (fmean(better) - fmean(baseline))
    n = min(len(better), len(baseline))
    if n < 2:
        return f"{label}: {difference:+.1f} {unit}, not resolved at {n} seed (the seed spread is unknown)"
    sd_a, sd_b = 100 * stdev(better), 100 * stdev(baseline)
    spread = 2 * math.sqrt(sd_a**2 / len(better) + sd_b**2 / len(baseline))
    seeds = f"{len(better)} and {len(baseline)} seeds, sd {sd_a:.1f} and {sd_b:.1f} points"
    if abs(difference) <= spread:
        return f"{label}: {difference:+.1f} {unit}, not resolved at {n} seeds ({seeds}: within the spread)"
    return f"{label}: {difference:+.1f} {unit} ({seeds})"


def _overlapping(runs: list[RunRecord]) -> bool:
    spans = sorted(span for span in (run.span for run in runs) if span is not None)
    return any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:]))


def cost(label: str, runs: list[RunRecord], baseline: list[RunRecord]) -> str | None:
    """``label: z.zx the training time per tile`` from the runs' own throughput, or None without it.

    Like a score, a cost ratio is only claimed beyond the runs' spread; runs that trained at the
    same time on one machine slowed each other, which the sentence says.
    """
    mine = [r.seconds_per_tile for r in runs if r.seconds_per_tile]
    theirs = [r.seconds_per_tile for r in baseline if r.seconds_per_tile]
    if not mine or not theirs:
        return None
    ratio = fmean(mine) / fmean(theirs)
    counted = f"{len(mine)} and {len(theirs)} run(s)"
    if len(mine) >= 2 and len(theirs) >= 2:
        spread = 2 * math.sqrt(stdev(mine) ** 2 / len(mine) + stdev(theirs) ** 2 / len(theirs))
        if abs(fmean(mine) - fmean(theirs)) <= spread:
            return f"{label}: {ratio:.2f}x the training time per tile, not resolved ({counted}: within the spread)"
    shared = "; they trained at the same time on shared hardware, so this is rough" if _overlapping(
        [*runs, *baseline]) else ""
    return f"{label}: {ratio:.2f}x the training time per tile ({counted}{shared})"


def _name(group: ArchitectureGroup) -> str:
    if group.family == "sam":
        name = "SAM_LoRA"
    else:
        name = f"{_VARIANT_NAMES.get(group.variant, group.variant)} {_FAMILY_NAMES.get(group.family, group.family)}"
    return f"{name} ({group.detail})" if group.detail else name


def _scores(group: ArchitectureGroup, metric: str) -> list[float]:
    return [score for score in (run.test(metric) for run in group.runs) if score is not None]


def answers(cohort: Cohort, metric: str = "dice_macro") -> list[str]:
    """Every sentence the numbers of one table support: variants vs their vanilla model, GLU's cost, the best.

    Groups are compared only inside their table (one store, one evaluation), and only where each
    side is one experiment: an architecture with several run configurations there is not compared
    (a run with a damaged file, alone beside its intact group, is left out).
    """
    groups, sentences = cohort.groups, []
    shown = [group for group in groups if cohort.only(group.arch) is group]  # one experiment per architecture
    ambiguous = list(dict.fromkeys(group.arch for group in groups if cohort.only(group.arch) is None))
    for arch in ambiguous:
        sentences.append(f"{arch}: not compared (several run configurations of it here, see the notes)")
    for group in shown:
        vanilla = cohort.only(group.vanilla) if group.vanilla and group.vanilla != group.arch else None
        if vanilla is None:
            continue
        mine, theirs = _scores(group, metric), _scores(vanilla, metric)
        if mine and theirs:
            sentences.append(compare(f"{_name(group)} vs {_name(vanilla)}", mine, theirs))
        else:
            sentences.append(f"{_name(group)} vs {_name(vanilla)}: not resolved (test evaluation missing)")
    for group in shown:
        if group.variant != "enhanced-glu":
            continue
        enhanced = [g for g in shown if g.family == group.family and g.variant == "enhanced"]
        if enhanced:
            sentence = cost(f"{_name(group)} vs {_name(enhanced[0])}", group.runs, enhanced[0].runs)
            if sentence:
                sentences.append(sentence)
    scored = [(fmean(_scores(g, metric)), g) for g in shown if _scores(g, metric)]
    if len(scored) >= 2:
        scored.sort(key=lambda pair: -pair[0])
        (best, top), (second, runner_up) = scored[0], scored[1]
        sentences.append(compare(f"Best on the test images: {_name(top)} ({best:.3f} Dice), ahead of {_name(runner_up)}",
                                 _scores(top, metric), _scores(runner_up, metric)))
    return sentences

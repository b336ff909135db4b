"""The report's answers to the lab's "why?" questions, generated from the numbers, never written.

A difference is claimed only when it exceeds the seeds' spread (2 standard deviations of the
difference of the two means, from the seeds of each); with fewer than two seeds on a side, or a
smaller difference, the sentence says "not resolved at n seeds" instead. Costs (time per epoch)
are measurements and are stated as ratios.

Example:
    >>> compare("Enhanced vs vanilla U-Net3+", [0.80, 0.82, 0.81], [0.70, 0.71, 0.69])
    'Enhanced vs vanilla U-Net3+: +11.0 Dice points (3 and 3 seeds, sd 1.0 and 1.0 points)'
    >>> compare("Enhanced vs vanilla U-Net3+", [0.80], [0.70])
    'Enhanced vs vanilla U-Net3+: +10.0 Dice points, not resolved at 1 seed (the seed spread is unknown)'
"""
from __future__ import annotations

import math
from statistics import fmean, stdev

from steelseg_hpc.report.collect import ArchitectureGroup

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


def _name(group: ArchitectureGroup) -> str:
    if group.family == "sam":
        return "SAM_LoRA"
    return f"{_VARIANT_NAMES.get(group.variant, group.variant)} {_FAMILY_NAMES.get(group.family, group.family)}"


def _scores(group: ArchitectureGroup, metric: str) -> list[float]:
    return [score for score in (run.test(metric) for run in group.runs) if score is not None]


def answers(groups: list[ArchitectureGroup], metric: str = "dice_macro") -> list[str]:
    """Every sentence the numbers support: variants vs their vanilla model, GLU's cost, the best."""
    by_name = {group.arch: group for group in groups}
    sentences = []
    for group in groups:
        vanilla = by_name.get(group.vanilla) if group.vanilla else None
        if vanilla is None or vanilla is group:
            continue
        mine, theirs = _scores(group, metric), _scores(vanilla, metric)
        if mine and theirs:
            sentences.append(compare(f"{_name(group)} vs {_name(vanilla)}", mine, theirs))
        else:
            sentences.append(f"{_name(group)} vs {_name(vanilla)}: not resolved (test evaluation missing)")
    for group in groups:
        if group.variant != "enhanced-glu":
            continue
        enhanced = next((g for g in groups if g.family == group.family and g.variant == "enhanced"), None)
        glu_time, enhanced_time = group.stat(lambda r: r.minutes_per_epoch)[0], (
            enhanced.stat(lambda r: r.minutes_per_epoch)[0] if enhanced else None)
        if glu_time and enhanced_time:
            sentences.append(f"GLU ({_name(group)}) cost {glu_time / enhanced_time:.2f}x the time per epoch of "
                             f"{_name(enhanced)} ({len(group.runs)} and {len(enhanced.runs)} run(s), same data and batch)")
    scored = [(fmean(_scores(g, metric)), g) for g in groups if _scores(g, metric)]
    if len(scored) >= 2:
        scored.sort(key=lambda pair: -pair[0])
        (best, top), (second, runner_up) = scored[0], scored[1]
        sentences.append(compare(f"Best on the test images: {_name(top)} ({best:.3f} Dice), ahead of {_name(runner_up)}",
                                 _scores(top, metric), _scores(runner_up, metric)))
    return sentences

"""``steelseg-hpc report``: one self-contained HTML page (and a Markdown twin) for the lab's meeting.

The page has the comparison table (one row per experiment of an architecture, mean ± sd over
its seeds: pixel accuracy, Dice, mIoU, per-class IoU, the change against the family's vanilla
model, parameters, GFLOPs per tile, peak memory, minutes per epoch, cost (GPU-hours, or CPU
core-hours for runs on CPUs), epochs, the checkpoint evaluated), generated answers, training curves, confusion matrices, test overlays with
the class legend, and the sections of any sweeps named. Runs on other stores (or measured another
way) are in tables of their own, with their store's classes (``report.groups``); a figure read
from a damaged file is ``?``, one not measured ``–``. Plots are embedded (``data:`` URIs), so the
page opens offline from a file URL; the Markdown twin links the same PNGs beside it. The folder is
written whole and never over a file the report did not write (``report.output``).

Example:
    >>> result = build_report(["demo-zoo", "demo-lora-rank"], Path("demo/report"))  # doctest: +SKIP
    >>> result["html"]  # doctest: +SKIP
    'demo/report/report.html'
"""
from __future__ import annotations

import base64
import importlib.metadata
import io
import re
import time
from pathlib import Path
from typing import Any

import jinja2
from PIL import Image

from steelseg_hpc.core.errors import ConfigError
from steelseg_hpc.core.io import atomic_write_json, atomic_write_text
from steelseg_hpc.core.rundir import RunFiles
from steelseg_hpc.launch import ExperimentIndex
from steelseg_hpc.report import figures
from steelseg_hpc.report.answers import answers
from steelseg_hpc.report.collect import collect_runs, gflops_per_tile
from steelseg_hpc.report.groups import ArchitectureGroup, Cohort, group_runs
from steelseg_hpc.report.output import ReportFolder
from steelseg_hpc.report.sweep import sweep_report
from steelseg_hpc.sweeps.outcome import cost_header
from steelseg_hpc.sweeps.study import load_existing_study, open_storage

#: Overlays embedded per architecture, and their width on the page (they are whole images).
OVERLAYS_PER_ARCH = 2
OVERLAY_WIDTH = 1200


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _fmt(mean: float | None, sd: float | None = None, scale: float = 1.0, spec: str = ".4f") -> str:
    if mean is None:
        return "–"
    text = format(mean * scale, spec)
    return f"{text} ± {format(sd * scale, spec)}" if sd is not None else text


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


class _Names:
    """File names for plots, unique in the report (two runs may have one folder name)."""

    def __init__(self):
        self.taken: set[str] = set()

    def __call__(self, stem: str, suffix: str = ".png") -> str:
        name, number = f"{_slug(stem)}{suffix}", 1
        while name in self.taken:
            number += 1
            name = f"{_slug(stem)}-{number}{suffix}"
        self.taken.add(name)
        return name


#: A figure read from a damaged file.
UNKNOWN = "?"


def _cost_unit(cohort: Cohort) -> str:
    """The cost column's title of a table: GPU-hours, CPU core-hours, or "cost" when runs differ."""
    return cost_header([run.cost.unit for group in cohort.groups for run in group.runs])


def _cost_cell(group: ArchitectureGroup, cohort: Cohort) -> str:
    """Mean ± sd of the group's cost; each run's own unit spelled out where the table mixes them."""
    units = {run.cost.unit for run in group.runs}
    if len(units) > 1:
        return "; ".join(f"{run.cost.value:.3f} {run.cost.unit}" for run in group.runs)
    cell = _fmt(*group.stat(lambda r: r.cost.value), spec=".3f")
    return cell if _cost_unit(cohort) != "cost" else f"{cell} {units.pop()}"


def _row(group: ArchitectureGroup, cohort: Cohort) -> dict[str, Any]:
    unknown, class_count = group.unknown, len(cohort.class_names)

    def shown(part: str, text: str) -> str:
        return UNKNOWN if part in unknown else text

    dice = group.stat(lambda r: r.test("dice_macro"))
    delta = "–"
    vanilla = cohort.only(group.vanilla) if group.vanilla and cohort.only(group.arch) is group else None
    if vanilla is not None and vanilla is not group and dice[0] is not None:
        base = vanilla.stat(lambda r: r.test("dice_macro"))[0]
        if base is not None:
            delta = f"{100 * (dice[0] - base):+.1f}"
    first = group.runs[0]
    tile = first.tile_size or 256
    gflops = gflops_per_tile(group.arch, first.options, tile, class_count) if class_count else None
    params = group.params()
    memory = group.stat(lambda r: r.peak_memory_mb)
    ious = group.per_class_iou() + [(None, None)] * max(0, class_count - len(group.per_class_iou()))
    return {
        "arch": group.arch, "label": group.label, "table": cohort.label, "class_names": cohort.class_names,
        "seeds": UNKNOWN if "config" in unknown else len(group.runs),
        "pixel_accuracy": shown("evaluation", _fmt(*group.stat(lambda r: r.test("pixel_accuracy")))),
        "dice": shown("evaluation", _fmt(*dice)),
        "miou": shown("evaluation", _fmt(*group.stat(lambda r: r.test("miou")))),
        "iou_per_class": [shown("evaluation", _fmt(mean, sd, spec=".3f")) for mean, sd in ious[:class_count]],
        "delta": shown("evaluation", delta),
        "params": shown("run_info", _fmt(params, scale=1e-6, spec=".2f") if params else "–"),
        "gflops": UNKNOWN if unknown & {"run_info", "config"} else (
            f"{gflops:.1f} @ {tile}²" if gflops is not None else "–"),
        "memory": shown("metrics", _fmt(*memory, scale=1 / 1024, spec=".2f")),
        "minutes": shown("metrics", _fmt(*group.stat(lambda r: r.minutes_per_epoch), spec=".2f")),
        "cost": shown("metrics", _cost_cell(group, cohort)),
        "epochs": "/".join(UNKNOWN if "metrics" in run.damage else str(len(run.rows)) for run in group.runs),
        "checkpoints": shown("evaluation", ", ".join((run.evaluation or {}).get("checkpoint", "–")
                                                     for run in group.runs)),
    }


def _overlay_figures(group: ArchitectureGroup, split: str, plots: Path, names: _Names) -> list[dict[str, str]]:
    shown = []
    run = group.runs[0]
    for tta in (False, True):
        folder = RunFiles(run.path).overlays(split, tta)
        for path in sorted(folder.glob("*.png"))[:OVERLAYS_PER_ARCH] if folder.is_dir() else []:
            with Image.open(path) as image:
                image = image.convert("RGB")
                if image.width > OVERLAY_WIDTH:
                    image = image.resize((OVERLAY_WIDTH, round(image.height * OVERLAY_WIDTH / image.width)))
                buffer = io.BytesIO()
                image.save(buffer, format="PNG")
            file = figures.save(buffer.getvalue(), plots / names(f"overlay_{group.label}_{path.stem}"))
            shown.append({"src": _data_uri(buffer.getvalue()), "file": f"plots/{file.name}",
                          "caption": f"{group.label} ({run.name}): {path.stem}"})
        if shown:
            break
    return shown


def _relocated(value: Any, stage: Path, out: Path) -> Any:
    """``value`` with the paths under ``stage`` (where the report is written first) under ``out``."""
    if isinstance(value, str) and value.startswith(str(stage)):
        return str(out) + value[len(str(stage)):]
    if isinstance(value, dict):
        return {key: _relocated(item, stage, out) for key, item in value.items()}
    if isinstance(value, list):
        return [_relocated(item, stage, out) for item in value]
    return value


def _sweep_section(name: str, index: ExperimentIndex, stage: Path, out: Path) -> dict[str, Any]:
    entry = next(e for e in index.sweeps() if e["name"] == name)
    study = load_existing_study(name, open_storage(entry["storage"]))
    folder = stage / f"sweep-{_slug(name)}"
    staged = sweep_report(study, folder)
    result = _relocated(staged, stage, out)
    atomic_write_json(folder / "summary.json", result)  # the paths it will have, not the staging folder's
    states = ", ".join(f"{n} {s.lower()}" for s, n in sorted(result["trials"].items()))
    table = None
    if result.get("ranks"):
        key = next(iter(result["ranks"][0]))
        table = {"headers": [key, "val Dice", "seeds", "trainable (M)", "peak memory (GiB)", "s / epoch"],
                 "rows": [[r[key], _fmt(r["mean"], r["sd"]), r["n"], _fmt(r["trainable_params"], scale=1e-6, spec=".2f"),
                           _fmt(r["peak_memory_mb"], scale=1 / 1024, spec=".2f"), _fmt(r["seconds_per_epoch"], spec=".1f")]
                          for r in result["ranks"]]}
    elif result.get("batch", {}).get("batches"):
        table = {"headers": ["batch", "best point", "val Dice", "seeds", "B_simple", "steps to target", "tiles to target"],
                 "rows": [[r["batch"], r["best_params"], _fmt(r["mean"], r["sd"]), r["n"], _fmt(r["b_simple_median"], spec=".1f"),
                           _fmt(r["steps_to_target"], spec=".0f"), _fmt(r["tiles_to_target"], spec=".0f")]
                          for r in result["batch"]["batches"]]}
    plots = []
    for plot in staged["plots"]:
        png = Path(plot).read_bytes()
        plots.append({"src": _data_uri(png), "file": str(Path(plot).relative_to(stage)), "caption": Path(plot).stem})
    return {"name": name, "kind": result["kind"], "states": f"trials: {states or 'none yet'}",
            "answers": result.get("answers", []), "table": table, "plots": plots, "summary": result}


def _run_figures(cohorts: list[Cohort], split: str, plots: Path) -> dict[str, list[dict[str, str]]]:
    """Curves per run, and per group its confusion matrix and overlays; a class legend per table."""
    names = _Names()
    shown: dict[str, list[dict[str, str]]] = {"curves": [], "confusions": [], "overlays": [], "legends": []}
    for cohort in cohorts:
        classes = cohort.class_names
        for group in cohort.groups:
            for run in group.runs:
                if run.rows:
                    png = figures.curves_png(run)
                    file = figures.save(png, plots / names(f"curves_{run.name}"))
                    shown["curves"].append({"src": _data_uri(png), "file": f"plots/{file.name}",
                                            "caption": f"{run.name} ({group.label})"})
            matrices = [confusion for confusion in ((run.evaluation or {}).get("overall", {}).get("confusion")
                                                    for run in group.runs)
                        if isinstance(confusion, list) and len(confusion) == len(classes) > 0
                        and all(isinstance(row, list) and len(row) == len(classes) for row in confusion)]
            if matrices:
                total = [[sum(matrix[i][j] for matrix in matrices) for j in range(len(classes))]
                         for i in range(len(classes))]
                png = figures.confusion_png(total, classes, f"{group.label} ({len(matrices)} run(s))")
                file = figures.save(png, plots / names(f"confusion_{group.label}"))
                shown["confusions"].append({"src": _data_uri(png), "file": f"plots/{file.name}",
                                            "caption": group.label})
            shown["overlays"] += _overlay_figures(group, split, plots, names)
        if classes and classes not in [legend["classes"] for legend in shown["legends"]]:
            png = figures.legend_png(classes)
            file = figures.save(png, plots / names("legend"))
            shown["legends"].append({"src": _data_uri(png), "file": f"plots/{file.name}", "classes": classes,
                                     "caption": cohort.label})
    return shown


def _environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.PackageLoader("steelseg_hpc.report", "templates"),
                              autoescape=jinja2.select_autoescape(["html"]), keep_trailing_newline=True)


def build_report(targets: list[str], out: Path, split: str = "test", index: ExperimentIndex | None = None,
                 evaluate_missing: bool = True, title: str | None = None, force: bool = False) -> dict[str, Any]:
    """Write ``report.html``, ``report.md``, ``report.json`` and the PNGs into ``out``.

    Args:
        targets: experiment names, sweep names, run directories, or folders of run directories.
        split: the store split whose whole images the test figures come from.
        evaluate_missing: run the sliding-window evaluation of runs that have none yet.
        force: replace files in ``out`` that the report did not write (``report.output``).

    Raises:
        ConfigError: no target names anything, or ``out`` holds files of the user's in the way
            (checked before any run is evaluated, and again before anything is written).
    """
    index = index or ExperimentIndex()
    out = Path(out)
    folder = ReportFolder(out, force)
    folder.check(["report.html", "report.md", "report.json"])
    sweep_names = {entry["name"] for entry in index.sweeps()}
    named_sweeps = [t for t in targets if t in sweep_names]
    notes: list[str] = []
    runs = collect_runs([t for t in targets if t not in sweep_names], index, split, evaluate_missing, notes=notes)
    if not runs and not named_sweeps:
        raise ConfigError(f"nothing to report: {', '.join(targets)} name no run, experiment or sweep")
    notes += [f"{run.name}: {run.evaluation_note}" for run in runs if run.evaluation is None and run.evaluation_note]
    notes += [line for run in runs for line in run.damage_notes(split)]
    cohorts = group_runs(runs, notes)
    several = len(cohorts) > 1
    tables = [{"label": cohort.label, "class_names": cohort.class_names, "cost_header": _cost_unit(cohort),
               "rows": [_row(group, cohort) for group in cohort.groups]} for cohort in cohorts]
    sentences = [f"{cohort.label}: {line}" if several else line for cohort in cohorts for line in answers(cohort)]
    with folder.staging() as stage:
        shown = _run_figures(cohorts, split, stage / "plots")
        context = {
            "title": title or f"steelseg-hpc report: {', '.join(targets)}",
            "generated": time.strftime("%Y-%m-%d %H:%M"), "version": importlib.metadata.version("steelseg-hpc"),
            "sources": targets, "split": split, "tables": tables,
            "class_names": cohorts[0].class_names if cohorts else [],
            "rows": [row for table in tables for row in table["rows"]], "notes": notes, "answers": sentences,
            **shown, "sweeps": [_sweep_section(name, index, stage, out) for name in named_sweeps],
        }
        environment = _environment()
        atomic_write_text(stage / "report.html", environment.get_template("report.html.j2").render(context))
        atomic_write_text(stage / "report.md", environment.get_template("report.md.j2").render(context))
        summary = {key: context[key] for key in ("title", "sources", "split", "class_names", "rows", "notes",
                                                 "answers")}
        summary["tables"] = [{"label": t["label"], "class_names": t["class_names"],
                              "rows": [row["label"] for row in t["rows"]]} for t in tables]
        summary["sweeps"] = [{k: v for k, v in s.items() if k != "plots"} for s in context["sweeps"]]
        summary["runs"] = [str(run.path) for run in runs]
        summary["duplicates"] = [str(run.path) for cohort in cohorts for group in cohort.groups
                                 for run in group.duplicates]
        atomic_write_json(stage / "report.json", summary)
    return {"html": str(out / "report.html"), "markdown": str(out / "report.md"), "json": str(out / "report.json"),
            "runs": len(runs), "architectures": len({run.arch for run in runs}), "sweeps": named_sweeps,
            "answers": sentences, "notes": notes}

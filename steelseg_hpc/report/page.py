"""``steelseg-hpc report``: one self-contained HTML page (and a Markdown twin) for the lab's meeting.

The page has the comparison table (one row per architecture, mean ± sd over seeds: pixel
accuracy, Dice, mIoU, per-class IoU, the change against the family's vanilla model, parameters,
GFLOPs per tile, peak memory, minutes per epoch, GPU-hours, epochs, the checkpoint evaluated),
generated answers, training curves, confusion matrices, test overlays with the class legend, and
the sections of any sweeps named. Plots are embedded (``data:`` URIs), so the page opens offline
from a file URL; the Markdown twin links the same PNGs beside it.

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
from steelseg_hpc.report.collect import ArchitectureGroup, collect_runs, gflops_per_tile, group_by_architecture
from steelseg_hpc.report.sweep import sweep_report
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


def _row(group: ArchitectureGroup, by_arch: dict[str, ArchitectureGroup], class_count: int) -> dict[str, Any]:
    dice = group.stat(lambda r: r.test("dice_macro"))
    delta = "–"
    vanilla = by_arch.get(group.vanilla) if group.vanilla else None
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
        "arch": group.arch, "seeds": len(group.runs),
        "pixel_accuracy": _fmt(*group.stat(lambda r: r.test("pixel_accuracy"))),
        "dice": _fmt(*dice), "miou": _fmt(*group.stat(lambda r: r.test("miou"))),
        "iou_per_class": [_fmt(mean, sd, spec=".3f") for mean, sd in ious[:class_count]],
        "delta": delta, "params": _fmt(params, scale=1e-6, spec=".2f") if params else "–",
        "gflops": f"{gflops:.1f} @ {tile}²" if gflops is not None else "–",
        "memory": _fmt(*memory, scale=1 / 1024, spec=".2f"),
        "minutes": _fmt(*group.stat(lambda r: r.minutes_per_epoch), spec=".2f"),
        "gpu_hours": _fmt(*group.stat(lambda r: r.gpu_hours), spec=".3f"),
        "epochs": "/".join(str(len(run.rows)) for run in group.runs),
        "checkpoints": ", ".join((run.evaluation or {}).get("checkpoint", "–") for run in group.runs),
    }


def _overlay_figures(group: ArchitectureGroup, split: str, plots: Path) -> list[dict[str, str]]:
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
            file = figures.save(buffer.getvalue(), plots / f"overlay_{_slug(group.arch)}_{path.name}")
            shown.append({"src": _data_uri(buffer.getvalue()), "file": f"plots/{file.name}",
                          "caption": f"{group.arch} ({run.name}): {path.stem}"})
        if shown:
            break
    return shown


def _sweep_section(name: str, index: ExperimentIndex, out: Path) -> dict[str, Any]:
    entry = next(e for e in index.sweeps() if e["name"] == name)
    study = load_existing_study(name, open_storage(entry["storage"]))
    result = sweep_report(study, out / f"sweep-{_slug(name)}")
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
    for plot in result["plots"]:
        png = Path(plot).read_bytes()
        plots.append({"src": _data_uri(png), "file": str(Path(plot).relative_to(out)), "caption": Path(plot).stem})
    return {"name": name, "kind": result["kind"], "states": f"trials: {states or 'none yet'}",
            "answers": result.get("answers", []), "table": table, "plots": plots, "summary": result}


def _environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.PackageLoader("steelseg_hpc.report", "templates"),
                              autoescape=jinja2.select_autoescape(["html"]), keep_trailing_newline=True)


def build_report(targets: list[str], out: Path, split: str = "test", index: ExperimentIndex | None = None,
                 evaluate_missing: bool = True, title: str | None = None) -> dict[str, Any]:
    """Write ``report.html``, ``report.md``, ``report.json`` and the PNGs into ``out``.

    Args:
        targets: experiment names, sweep names, run directories, or folders of run directories.
        split: the store split whose whole images the test figures come from.
        evaluate_missing: run the sliding-window evaluation of runs that have none yet.

    Raises:
        ConfigError: no target names anything.
    """
    index = index or ExperimentIndex()
    out = Path(out)
    sweep_names = {entry["name"] for entry in index.sweeps()}
    named_sweeps = [t for t in targets if t in sweep_names]
    gone: list[str] = []
    runs = collect_runs([t for t in targets if t not in sweep_names], index, split, evaluate_missing, notes=gone)
    if not runs and not named_sweeps:
        raise ConfigError(f"nothing to report: {', '.join(targets)} name no run, experiment or sweep")
    groups = group_by_architecture(runs)
    by_arch = {group.arch: group for group in groups}
    class_names = next((run.evaluation["class_names"] for run in runs if run.evaluation), [])
    plots = out / "plots"
    curves, confusions, overlays = [], [], []
    for run in runs:
        if run.rows:
            png = figures.curves_png(run)
            file = figures.save(png, plots / f"curves_{_slug(run.name)}.png")
            curves.append({"src": _data_uri(png), "file": f"plots/{file.name}", "caption": f"{run.name} ({run.arch})"})
    for group in groups:
        evaluated = [run for run in group.runs if run.evaluation and run.evaluation.get("overall", {}).get("confusion")]
        if evaluated:
            total = [[sum(run.evaluation["overall"]["confusion"][i][j] for run in evaluated)
                      for j in range(len(class_names))] for i in range(len(class_names))]
            png = figures.confusion_png(total, class_names, f"{group.arch} ({len(evaluated)} run(s))")
            file = figures.save(png, plots / f"confusion_{_slug(group.arch)}.png")
            confusions.append({"src": _data_uri(png), "file": f"plots/{file.name}", "caption": group.arch})
        overlays += _overlay_figures(group, split, plots)
    legend_png = figures.legend_png(class_names) if class_names else None
    legend_file = figures.save(legend_png, plots / "legend.png") if legend_png else None
    notes = gone + [f"{run.name}: {run.evaluation_note}" for run in runs if run.evaluation is None]
    context = {
        "title": title or f"steelseg-hpc report: {', '.join(targets)}",
        "generated": time.strftime("%Y-%m-%d %H:%M"), "version": importlib.metadata.version("steelseg-hpc"),
        "sources": targets, "split": split, "class_names": class_names,
        "rows": [_row(group, by_arch, len(class_names)) for group in groups],
        "notes": notes, "answers": answers(groups), "curves": curves, "confusions": confusions,
        "overlays": overlays, "legend": _data_uri(legend_png) if legend_png else None,
        "legend_file": f"plots/{legend_file.name}" if legend_file else None,
        "sweeps": [_sweep_section(name, index, out) for name in named_sweeps],
    }
    environment = _environment()
    html = out / "report.html"
    atomic_write_text(html, environment.get_template("report.html.j2").render(context))
    atomic_write_text(out / "report.md", environment.get_template("report.md.j2").render(context))
    summary = {key: context[key] for key in ("title", "sources", "split", "class_names", "rows", "notes", "answers")}
    summary["sweeps"] = [{k: v for k, v in s.items() if k != "plots"} for s in context["sweeps"]]
    summary["runs"] = [str(run.path) for run in runs]
    atomic_write_json(out / "report.json", summary)
    return {"html": str(html), "markdown": str(out / "report.md"), "json": str(out / "report.json"),
            "runs": len(runs), "architectures": len(groups), "sweeps": named_sweeps, "answers": context["answers"],
            "notes": notes}

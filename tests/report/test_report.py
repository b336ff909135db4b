"""The report page: every section, answers that follow the numbers, missing evaluations, a real browser."""
from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from steelseg_hpc.cli import main
from steelseg_hpc.core import rundir
from steelseg_hpc.core.io import atomic_write_json
from steelseg_hpc.core.rundir import FinalSummary, MetricsRow, RunFiles, RunInfo
from steelseg_hpc.data.store import open_store, store_identity
from steelseg_hpc.launch import JobRow
from steelseg_hpc.report import build_report
from steelseg_hpc.training import load_run_config

CLASSES = ["ferrite", "pearlite", "carbide"]


CPU_HOST = {"hostname": "n1", "gpus": [], "cpu_count": 2, "cpu_threads": 2, "world_size": 1}


def fabricate_run(folder: Path, arch: str, seed: int, test_dice: float, epoch_seconds: float = 60.0,
                  evaluated: bool = True, tiles_per_s: float | None = None, started: str | None = None,
                  store: str = "s.zarr", identity: dict | None = None, classes: list[str] = CLASSES,
                  overrides: tuple[str, ...] = (), host: dict | None = None) -> Path:
    """A run directory as the engine writes one, with chosen figures (no training).

    ``identity`` is the store identity run.json records (default: that of ``store``); ``classes``
    the store's classes the evaluation names; ``overrides`` further run-config ``KEY=VALUE``;
    ``host`` the host facts of its start (default: a CPU run of one rank on 2 threads).
    """
    run = folder / f"{arch}-s{seed}"
    files = RunFiles(run)
    run.mkdir(parents=True)
    options = ["model.base_channels=4", f"seed={seed}", *overrides]
    files.config.write_text(load_run_config(None, options, arch=arch, store=store, epochs=3).to_toml())
    if identity is None:
        identity = {"tile_size": 64} if store == "s.zarr" else store_identity(open_store(store))
    rundir.write_run_info(files, RunInfo(created="t", arch=arch, model={"total_params": 123456, "arch": arch},
                                         store=identity,
                                         starts=[{"precision": "fp32", "host": host or CPU_HOST,
                                                  **({"time": started} if started else {})}]))
    for epoch in (1, 2, 3):
        rundir.append_metrics(files, MetricsRow(
            epoch=epoch, step=epoch * 4, train_loss=1.0 / epoch, val_loss=1.1 / epoch, train_dice=0.3 * epoch,
            val_dice=test_dice * epoch / 3, lr=1e-3 / epoch, epoch_seconds=epoch_seconds, peak_memory_mb=900.0,
            noise_scale_b_simple=10.0 * epoch, world_size=1, global_batch=8, tiles_trained=epoch * 32,
            tiles_per_s=tiles_per_s))
    rundir.write_final(files, FinalSummary(run_dir=str(run), stopped="completed", epochs_completed=3,
                                           best_epoch=3, best_val_dice=test_dice))
    if evaluated:
        confusion = [[90 if i == j else 5 for j in range(len(classes))] for i in range(len(classes))]
        ious = [0.8, 0.7, *[test_dice - 0.2] * (len(classes) - 2)]
        atomic_write_json(files.eval_metrics("test"), {
            "split": "test", "checkpoint": "epoch0003", "checkpoint_choice": "best", "tta": False,
            "class_names": classes,
            "overall": {"pixel_accuracy": test_dice + 0.05, "dice_macro": test_dice, "miou": test_dice - 0.1,
                        "iou_per_class": ious, "confusion": confusion},
            "per_image": []})
        overlay = np.zeros((32, 96, 3), dtype=np.uint8)
        overlay[:, 32:64] = (230, 25, 75)
        files.overlays("test").mkdir(parents=True, exist_ok=True)
        Image.fromarray(overlay).save(files.overlays("test") / "0000_E1_x.png")
    return run


def two_by_two(folder: Path, enhanced: tuple[float, float], vanilla: tuple[float, float]) -> list[str]:
    runs = [fabricate_run(folder, "unet3plus", s, d) for s, d in enumerate(vanilla)]
    runs += [fabricate_run(folder, "unet3plus-enhanced", s, d, epoch_seconds=120.0) for s, d in enumerate(enhanced)]
    return [str(run) for run in runs]


@pytest.mark.slow
def test_the_report_has_every_section_for_two_architectures_and_two_seeds(tmp_path, index_file):
    targets = two_by_two(tmp_path / "runs", enhanced=(0.80, 0.82), vanilla=(0.70, 0.71))
    result = build_report(targets, tmp_path / "report", index=index_file)
    html = Path(result["html"]).read_text()
    for section in ("Comparison", "Answers", "Training and validation curves", "Confusion matrices",
                    "Test overlays"):
        assert f">{section}" in html, section
    assert html.count("<tr>") == 3  # header + one row per architecture
    assert "0.7050 ± 0.0071" in html and "0.8100 ± 0.0141" in html  # Dice, mean ± sd over the 2 seeds
    assert "+10.5" in html and "IoU carbide" in html and "0.12 @ 64²" not in html  # Δ vs vanilla in points
    markdown = Path(result["markdown"]).read_text()
    assert "| unet3plus-enhanced | 2 |" in markdown and "![confusion matrix of unet3plus]" in markdown
    for link in re.findall(r"\]\((plots/[^)]+)\)", markdown):
        assert (tmp_path / "report" / link).is_file(), link
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(images) >= 2 * 1 + 2 + 1  # curves per run, confusions, legend, overlays
    for data in images:
        with Image.open(io.BytesIO(base64.b64decode(data))) as image:
            image.load()
    assert "http://" not in html and "https://" not in html  # opens offline
    summary = json.loads(Path(result["json"]).read_text())
    assert [row["arch"] for row in summary["rows"]] == ["unet3plus", "unet3plus-enhanced"]


@pytest.mark.slow
def test_answers_follow_the_numbers(tmp_path, index_file):
    clear = build_report(two_by_two(tmp_path / "a", enhanced=(0.80, 0.82), vanilla=(0.70, 0.71)), tmp_path / "ra",
                         index=index_file)["answers"]
    assert any(s.startswith("Enhanced U-Net3+ vs vanilla U-Net3+: +10.5 Dice points (2 and 2 seeds") for s in clear)
    same = build_report(two_by_two(tmp_path / "b", enhanced=(0.70, 0.74), vanilla=(0.71, 0.73)), tmp_path / "rb",
                        index=index_file)["answers"]
    assert any("vs vanilla U-Net3+: +0.0 Dice points, not resolved at 2 seeds" in s for s in same), same
    assert not any("Dice points (2 and 2 seeds" in s and "vs vanilla" in s for s in same)



@pytest.mark.slow
def test_the_glu_cost_follows_the_runs_throughput(tmp_path, index_file):
    def glu_vs_enhanced(folder: Path, glu: tuple[float, float], enhanced: tuple[float, float], started=None):
        runs = [fabricate_run(folder, "unet3plus-enhanced-glu", s, 0.8, tiles_per_s=t, started=started)
                for s, t in enumerate(glu)]
        runs += [fabricate_run(folder, "unet3plus-enhanced", s, 0.8, tiles_per_s=t, started=started)
                 for s, t in enumerate(enhanced)]
        result = build_report([str(r) for r in runs], folder / "report", index=index_file, evaluate_missing=False)
        return [s for s in result["answers"] if "training time per tile" in s]

    slower = glu_vs_enhanced(tmp_path / "a", glu=(10.0, 10.5), enhanced=(20.0, 21.0))
    assert slower == ["Enhanced* (GLU) U-Net3+ vs Enhanced U-Net3+: 2.00x the training time per tile "
                      "(2 and 2 run(s))"], slower
    noisy = glu_vs_enhanced(tmp_path / "b", glu=(10.0, 30.0), enhanced=(20.0, 21.0))
    assert len(noisy) == 1 and "not resolved" in noisy[0]
    together = glu_vs_enhanced(tmp_path / "c", glu=(10.0, 10.5), enhanced=(20.0, 21.0), started="2026-01-01T10:00:00")
    assert "trained at the same time" in together[0]

def test_a_run_without_evaluation_is_reported_missing_not_a_failure(tmp_path, index_file):
    run = fabricate_run(tmp_path / "runs", "elunet", 0, 0.6, evaluated=False)
    result = CliRunner().invoke(main, ["report", str(run), "--out", str(tmp_path / "r"),
                                       "--index", str(index_file.path)])
    assert result.exit_code == 0, result.output
    assert "no test evaluation" in result.output
    html = (tmp_path / "r" / "report.html").read_text()
    assert "elunet-s0: no test evaluation" in html
    assert "<td>–</td>" in html  # the test figures are shown as missing, not as numbers


def test_a_split_that_no_run_has_is_one_line_not_an_empty_report(tmp_path, index_file, tiny_store):
    run = fabricate_run(tmp_path / "runs", "elunet", 0, 0.6, evaluated=False, store=str(tiny_store))
    result = CliRunner().invoke(main, ["report", str(run), "--split", "tset", "--out", str(tmp_path / "r"),
                                       "--index", str(index_file.path)])
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert "--split tset: the store" in line and "has no such split (it has train, val, test)" in line
    assert not (tmp_path / "r").exists()


def test_an_experiment_whose_run_directories_are_gone_says_so(tmp_path, index_file):
    runs = [fabricate_run(tmp_path / "runs", "unet3plus", seed, 0.7) for seed in (0, 1)]
    index_file.record_experiment("moved", tmp_path, None, None, "local")
    for number, run in enumerate(runs):
        index_file.record_job(JobRow(job_id=str(900 + number), experiment="moved", arch="unet3plus", seed=number,
                                     run_dir=str(run), executor="local", stdout="o", stderr="e"))
    shutil.rmtree(runs[0])
    args = ["report", "moved", "--index", str(index_file.path), "--out", str(tmp_path / "r")]
    partly = CliRunner().invoke(main, args)
    assert partly.exit_code == 0, partly.output
    assert "1 run directory is gone, left out" in partly.output and "1 run(s) of 1 architecture(s)" in partly.output
    shutil.rmtree(runs[1])
    gone = CliRunner().invoke(main, [*args[:-1], str(tmp_path / "r2")])
    assert gone.exit_code == 2 and "none of its 2 run directories exists any more" in gone.output
    assert not (tmp_path / "r2").exists()


def test_nothing_to_report_is_one_line(tmp_path, index_file):
    result = CliRunner().invoke(main, ["report", "no-such-experiment", "--index", str(index_file.path)])
    assert result.exit_code == 2
    assert "'no-such-experiment' is neither a run directory nor an experiment or sweep" in result.output


@pytest.mark.browser
def test_headless_chromium_renders_the_page_without_console_errors(tmp_path, index_file):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (scripts/test installs it)")
    result = build_report(two_by_two(tmp_path / "runs", (0.8, 0.82), (0.7, 0.71)), tmp_path / "report",
                          index=index_file)
    shot = tmp_path / "shot.png"
    done = subprocess.run([browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--window-size=1280,1600", "--enable-logging=stderr", "--v=0",
                           f"--screenshot={shot}", Path(result["html"]).absolute().as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert shot.is_file(), done.stderr[-2000:]
    console = [line for line in done.stderr.splitlines() if "CONSOLE" in line]
    assert not console, console
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.std() > 10 and (pixels < 128).mean() > 0.01  # text, tables and plots, not a blank page

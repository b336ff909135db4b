"""The report pools only comparable runs, counts a seed once, names damaged files and keeps the user's files."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from steelseg_hpc.cli import main
from steelseg_hpc.core.rundir import RunFiles
from tests.report.test_report import CLASSES, fabricate_run

FIVE = ["matrix", "austenite", "martensite", "precipitate", "defect"]


def identity(name: str, classes: list[str], spec_hash: str, path: str | None = None) -> dict:
    """A store identity as training records it in run.json (``data.store_identity``)."""
    return {"path": path or f"/data/{name}.zarr", "spec_hash": spec_hash, "dataset": name,
            "num_classes": len(classes), "class_names": classes, "tile_size": 64}


def report(targets: list[Path], out: Path, index_file, *extra: str):
    """``steelseg-hpc report TARGETS --out OUT``; returns the result and report.json (None on failure)."""
    result = CliRunner().invoke(main, ["report", *map(str, targets), "--out", str(out),
                                       "--index", str(index_file.path), *extra])
    summary = json.loads((out / "report.json").read_text()) if result.exit_code == 0 else None
    return result, summary


def test_runs_on_stores_with_other_classes_are_separate_rows_with_their_own_classes(tmp_path, index_file):
    three = fabricate_run(tmp_path / "a", "unet3plus", 0, 0.70, identity=identity("three", CLASSES, "aaa"))
    five = fabricate_run(tmp_path / "b", "unet3plus", 1, 0.60, identity=identity("five", FIVE, "bbb"), classes=FIVE)
    result, summary = report([three, five], tmp_path / "r", index_file)
    assert result.exit_code == 0, result.output
    rows = summary["rows"]
    assert [(row["arch"], row["seeds"]) for row in rows] == [("unet3plus", 1), ("unet3plus", 1)]
    assert sorted((row["class_names"], len(row["iou_per_class"])) for row in rows) == [(CLASSES, 3), (FIVE, 5)]
    assert {row["dice"] for row in rows} == {"0.7000", "0.6000"}  # no mean over two datasets
    markdown = (tmp_path / "r" / "report.md").read_text()
    assert "IoU carbide" in markdown and "IoU defect" in markdown
    (note,) = [note for note in summary["notes"] if "not pooled" in note]
    assert "store" in note and str(three) in note and str(five) in note


def test_only_fields_that_change_the_science_keep_runs_apart(tmp_path, index_file):
    store = identity("three", CLASSES, "aaa")
    moved = identity("three", CLASSES, "aaa", path="/elsewhere/three.zarr")  # the same content, copied
    runs = [fabricate_run(tmp_path / "runs", "unet3plus", 0, 0.70, identity=store),
            fabricate_run(tmp_path / "runs", "unet3plus", 1, 0.72, identity=moved, store="/elsewhere/three.zarr",
                          overrides=("data.num_workers=0", "progress=false", "keep_checkpoints=5")),
            fabricate_run(tmp_path / "runs", "unet3plus", 2, 0.90, identity=store, overrides=("optimizer.lr=0.01",))]
    result, summary = report([tmp_path / "runs"], tmp_path / "r", index_file)
    assert result.exit_code == 0, result.output
    assert sorted((row["label"], row["seeds"], row["dice"]) for row in summary["rows"]) == [
        ("unet3plus (optimizer.lr=0.001)", 2, "0.7100 ± 0.0141"), ("unet3plus (optimizer.lr=0.01)", 1, "0.9000")]
    (note,) = [note for note in summary["notes"] if "not pooled" in note]
    assert "optimizer.lr" in note and "num_workers" not in note and "data.store" not in note


def test_a_copied_run_directory_is_one_measurement_not_another_seed(tmp_path, index_file):
    run = fabricate_run(tmp_path / "runs", "unet3plus", 0, 0.70)
    copy = shutil.copytree(run, tmp_path / "runs" / "unet3plus-s0-copy")
    result, summary = report([tmp_path / "runs"], tmp_path / "r", index_file)
    assert result.exit_code == 0, result.output
    (row,) = summary["rows"]
    assert row["seeds"] == 1 and row["dice"] == "0.7000" and row["epochs"] == "3"
    (note,) = [note for note in summary["notes"] if "same seed" in note]
    assert str(run) in note and str(copy) in note and "counted once" in note


def test_the_same_seed_twice_among_other_seeds_is_counted_once(tmp_path, index_file):
    runs = [fabricate_run(tmp_path / "runs", "unet3plus", seed, dice) for seed, dice in ((0, 0.70), (1, 0.74))]
    shutil.copytree(runs[1], tmp_path / "again" / "unet3plus-s1")
    result, summary = report([tmp_path / "runs", tmp_path / "again"], tmp_path / "r", index_file)
    assert result.exit_code == 0, result.output
    (row,) = summary["rows"]
    assert row["seeds"] == 2 and row["dice"] == "0.7200 ± 0.0283"


def _garbage_mid_file(path: Path) -> None:
    lines = path.read_text().splitlines(keepends=True)
    path.write_text(lines[0] + "}{ not a metrics row\n" + "".join(lines[1:]))


def _not_text(path: Path) -> None:
    path.write_bytes(b"\xff\xfe\x00garbage\n" + path.read_bytes())


def _a_folder(path: Path) -> None:
    path.unlink()
    path.mkdir()


def _not_json(path: Path) -> None:
    path.write_text('{"torn": ')


def _not_an_object(path: Path) -> None:
    path.write_text("[1, 2, 3]\n")


def _wrong_types(path: Path) -> None:
    data = json.loads(path.read_text())
    data["model"] = "not a table"
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("file, damage, unknown", [
    ("metrics.jsonl", _garbage_mid_file, ("epochs", "minutes", "cost", "memory")),
    ("metrics.jsonl", _not_text, ("epochs", "minutes", "cost", "memory")),
    ("metrics.jsonl", _a_folder, ("epochs", "minutes", "cost", "memory")),
    ("run.json", _not_json, ("params", "gflops")),
    ("run.json", _wrong_types, ("params", "gflops")),
    ("final.json", _not_an_object, ()),
    ("eval/test/metrics.json", _not_json, ("dice", "miou", "pixel_accuracy", "checkpoints")),
    ("eval/test/metrics.json", _not_an_object, ("dice", "miou", "pixel_accuracy", "checkpoints")),
])
def test_a_damaged_run_file_is_named_and_its_figures_are_unknown_not_zero(tmp_path, index_file, file, damage,
                                                                          unknown):
    run = fabricate_run(tmp_path / "runs", "unet3plus", 0, 0.70)
    damage(run / file)
    result, summary = report([run], tmp_path / "r", index_file)
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    assert "damaged" in result.output
    (note,) = [note for note in summary["notes"] if str(run / file) in note]
    assert "damaged" in note
    (row,) = summary["rows"]
    for column in unknown:
        assert row[column] == "?", (column, row)
    for column in {"epochs", "cost", "dice", "params"} - set(unknown):
        assert row[column] not in ("?", "0", "0.000", "–"), (column, row)


def test_a_torn_last_metrics_line_is_a_normal_crash_artefact_not_damage(tmp_path, index_file):
    run = fabricate_run(tmp_path / "runs", "unet3plus", 0, 0.70)
    with RunFiles(run).metrics.open("a") as handle:
        handle.write('{"epoch": 4, "step": 16, "val')
    result, summary = report([run], tmp_path / "r", index_file)
    assert result.exit_code == 0, result.output
    assert summary["notes"] == [] and summary["rows"][0]["epochs"] == "3"


def test_report_out_never_overwrites_a_file_it_did_not_write(tmp_path, index_file):
    run = fabricate_run(tmp_path / "runs", "unet3plus", 0, 0.70)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "report.md").write_text("my own notes\n")
    refused, _ = report([run], mine, index_file)
    assert refused.exit_code == 2 and "Traceback" not in refused.output
    assert "report.md" in refused.output and "--force" in refused.output
    assert (mine / "report.md").read_text() == "my own notes\n" and sorted(mine.iterdir()) == [mine / "report.md"]
    forced, _ = report([run], mine, index_file, "--force")
    assert forced.exit_code == 0, forced.output
    assert (mine / "report.md").read_text().startswith("# steelseg-hpc report")


def test_report_out_refreshes_its_own_folder_and_keeps_the_users_files_there(tmp_path, index_file):
    run = fabricate_run(tmp_path / "runs", "unet3plus", 0, 0.70)
    out = tmp_path / "r"
    first, _ = report([run], out, index_file)
    assert first.exit_code == 0, first.output
    (out / "notes.txt").write_text("keep me\n")
    again, _ = report([run], out, index_file, "--title", "again")
    assert again.exit_code == 0, again.output
    assert "# again" in (out / "report.md").read_text() and (out / "notes.txt").read_text() == "keep me\n"
    (out / "report.md").write_text("edited by hand\n")  # no longer the report's own file
    (out / "plots" / "legend.png").unlink()
    edited, _ = report([run], out, index_file)
    assert edited.exit_code == 2 and "report.md" in edited.output and "--force" in edited.output
    assert (out / "report.md").read_text() == "edited by hand\n" and not (out / "plots" / "legend.png").exists()


def test_report_out_never_overwrites_a_plot_it_did_not_write(tmp_path, index_file):
    run = fabricate_run(tmp_path / "runs", "unet3plus", 0, 0.70)
    out = tmp_path / "r"
    (out / "plots").mkdir(parents=True)
    (out / "plots" / "legend.png").write_bytes(b"my picture")
    refused, _ = report([run], out, index_file)
    assert refused.exit_code == 2 and "legend.png" in refused.output, refused.output
    assert (out / "plots" / "legend.png").read_bytes() == b"my picture" and not (out / "report.html").exists()


def test_a_sweep_section_lands_in_out_with_the_paths_it_has_there(tmp_path, index_file):
    import optuna

    from steelseg_hpc.sweeps.study import open_storage

    journal = str(tmp_path / "journal.log")
    study = optuna.create_study(study_name="tiny", storage=open_storage(journal, create=True), direction="maximize")
    study.set_user_attr("sweep", {"space": {"lr": "optimizer.lr"}, "metric": "val_dice"})
    choices = optuna.distributions.CategoricalDistribution([0.001, 0.01])
    for lr, dice in ((0.001, 0.5), (0.01, 0.6), (0.001, 0.52)):
        study.add_trial(optuna.trial.create_trial(params={"lr": lr}, distributions={"lr": choices}, value=dice))
    index_file.record_sweep("tiny", tmp_path, journal, None)
    run = fabricate_run(tmp_path / "runs", "unet3plus", 0, 0.70)
    result, summary = report([run, "tiny"], tmp_path / "r", index_file)
    assert result.exit_code == 0, result.output
    plots = summary["sweeps"][0]["summary"]["plots"]
    assert plots and all(Path(plot).is_file() and Path(plot).parent == tmp_path / "r" / "sweep-tiny" for plot in plots)
    assert json.loads((tmp_path / "r" / "sweep-tiny" / "summary.json").read_text())["plots"] == plots
    assert sorted(path.name for path in tmp_path.iterdir()) == ["index.sqlite", "journal.log", "r", "runs"]


def test_the_cost_column_names_the_device_the_runs_trained_on(tmp_path, index_file):
    gpu = {"hostname": "g1", "gpus": ["NVIDIA H100"], "cpu_count": 32, "cpu_threads": 8, "world_size": 1}
    cpu_runs = [fabricate_run(tmp_path / "cpu", "unet3plus", seed, 0.7) for seed in (0, 1)]
    result, summary = report(cpu_runs, tmp_path / "r-cpu", index_file)
    assert result.exit_code == 0, result.output
    # 3 epochs of 60 s on one rank with 2 threads: 0.05 hours x 2 cores
    assert summary["rows"][0]["cost"] == "0.100 ± 0.000"
    markdown = (tmp_path / "r-cpu" / "report.md").read_text()
    assert "| CPU core-hours |" in markdown and "GPU-hours" not in markdown
    gpu_run = fabricate_run(tmp_path / "gpu", "unet3plus", 2, 0.7, host=gpu)
    result, summary = report([gpu_run], tmp_path / "r-gpu", index_file)
    assert "| GPU-hours |" in (tmp_path / "r-gpu" / "report.md").read_text()
    assert summary["rows"][0]["cost"] == "0.050"
    # GPU-hours and CPU core-hours do not add up: each run says which it is
    result, summary = report([*cpu_runs, gpu_run], tmp_path / "r-both", index_file)
    (row,) = summary["rows"]
    assert row["cost"] == "0.100 CPU core-hours; 0.100 CPU core-hours; 0.050 GPU-hours"
    assert "| cost |" in (tmp_path / "r-both" / "report.md").read_text()

"""The run-directory contract: readers tolerate runs in progress, records round-trip."""
from __future__ import annotations

import json

import pytest

from steelseg_hpc.core import rundir
from steelseg_hpc.core.rundir import FinalSummary, MetricsRow, RunFiles, RunInfo


def test_metrics_reader_skips_a_torn_last_line(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "val_dice": 0.5}) + '\n{"epoch": 2, "val')
    rows = rundir.read_metrics(tmp_path)
    assert [(row.epoch, row.val_dice) for row in rows] == [(1, 0.5)]
    assert rundir.read_metrics(tmp_path / "nothing") == []


def test_rows_round_trip_and_keep_fields_they_do_not_know(tmp_path):
    files = RunFiles(tmp_path)
    rundir.append_metrics(files, MetricsRow(epoch=1, step=3, val_dice=0.25))
    with files.metrics.open("a") as handle:
        handle.write(json.dumps({"epoch": 2, "step": 6, "val_dice": 0.5, "from_the_future": 7}) + "\n")
    first, second = rundir.read_metrics(tmp_path)
    assert first.to_dict()["val_dice"] == 0.25 and first.extra == {}
    assert second.extra == {"from_the_future": 7} and second.to_dict()["from_the_future"] == 7
    assert rundir.best_value([first, second], "val_dice") == 0.5
    assert rundir.best_value([MetricsRow(epoch=1)], "val_dice") is None


def test_final_and_run_info_are_none_until_written_then_round_trip(tmp_path):
    files = RunFiles(tmp_path)
    assert rundir.read_final(tmp_path) is None and rundir.read_run_info(tmp_path) is None
    rundir.write_final(files, FinalSummary(run_dir=str(tmp_path), stopped="completed", epochs_completed=3))
    rundir.write_run_info(files, RunInfo(created="now", starts=[{"precision": "fp32"}]))
    assert rundir.read_final(tmp_path).epochs_completed == 3
    info = rundir.read_run_info(tmp_path)
    assert info.schema_version == rundir.SCHEMA_VERSION and info.last_start == {"precision": "fp32"}
    (tmp_path / "final.json").write_text("{not json")
    assert rundir.read_final(tmp_path) is None


def test_evaluation_paths():
    files = RunFiles("/runs/a")
    assert str(files.eval_metrics("test", tta=True)) == "/runs/a/eval/test-tta/metrics.json"
    assert str(files.overlays("val")) == "/runs/a/eval/val/overlays"


def test_strict_readers_tell_damage_from_a_run_in_progress(tmp_path):
    files = RunFiles(tmp_path)
    assert rundir.read_metrics(tmp_path, strict=True) == [] and rundir.read_run_info(tmp_path, strict=True) is None
    row = json.dumps({"epoch": 1, "val_dice": 0.5})
    files.metrics.write_text(row + '\n{"epoch": 2, "val')  # torn mid-write: a normal crash artefact
    assert [r.epoch for r in rundir.read_metrics(tmp_path, strict=True)] == [1]
    for damaged in (row + "\n{not json\n", "{not json\n" + row + "\n", row + '\n{"epoch": "two"}\n', row + "\n[1]\n"):
        files.metrics.write_text(damaged)
        with pytest.raises(rundir.DamagedRunFile, match=r"metrics.jsonl: damaged, line [12] is not a metrics row"):
            rundir.read_metrics(tmp_path, strict=True)
        assert rundir.read_metrics(tmp_path)[0].epoch == 1  # the lenient reader skips, as before
    files.metrics.write_bytes(b"\xff\xfe" + row.encode() + b"\n")
    with pytest.raises(rundir.DamagedRunFile, match="cannot be read as text"):
        rundir.read_metrics(tmp_path, strict=True)
    for text, why in (("{not json", "not JSON"), ("[1]", "expected a JSON object"),
                      ('{"model": "big", "starts": []}', "model: expected dict")):
        files.run_info.write_text(text)
        with pytest.raises(rundir.DamagedRunFile, match=why):
            rundir.read_run_info(tmp_path, strict=True)
        assert rundir.read_run_info(tmp_path) is None or text.startswith('{"model"')
    files.eval_metrics("test").parent.mkdir(parents=True)
    files.eval_metrics("test").write_text('{"overall": 0.5}')
    with pytest.raises(rundir.DamagedRunFile, match="'overall'"):
        rundir.read_evaluation(tmp_path, "test", strict=True)

"""The run-directory contract every stage reads: torn lines, schema versions, unknown fields, every reader."""
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


def test_only_an_unterminated_last_line_counts_as_torn(tmp_path):
    files = RunFiles(tmp_path)
    rows = [json.dumps({"epoch": epoch, "val_dice": epoch / 10}) for epoch in (1, 2)]
    files.metrics.write_text(rows[0] + "\n\n" + rows[1])  # a blank line; the last row whole but unterminated
    assert [row.epoch for row in rundir.read_metrics(tmp_path, strict=True)] == [1, 2]
    files.metrics.write_text(rows[0] + '\n{"epoch": 2, "val\n')  # terminated, so written whole: damage
    assert [row.epoch for row in rundir.read_metrics(tmp_path)] == [1]
    with pytest.raises(rundir.DamagedRunFile, match="line 2 is not a metrics row"):
        rundir.read_metrics(tmp_path, strict=True)


def test_schema_version_is_written_and_a_newer_one_is_read_as_written(tmp_path):
    files = RunFiles(tmp_path)
    rundir.write_run_info(files, RunInfo(created="now"))
    assert json.loads(files.run_info.read_text())["schema_version"] == rundir.SCHEMA_VERSION
    newer = rundir.SCHEMA_VERSION + 1
    files.run_info.write_text(json.dumps({"schema_version": newer, "created": "later", "hosts_seen": 3}))
    info = rundir.read_run_info(tmp_path, strict=True)
    assert info.schema_version == newer and info.extra == {"hosts_seen": 3}
    files.run_info.write_text(json.dumps({"schema_version": "1"}))
    with pytest.raises(rundir.DamagedRunFile, match="schema_version: expected int"):
        rundir.read_run_info(tmp_path, strict=True)


@pytest.mark.parametrize("record, write, read, filename", [
    (RunInfo(created="now"), rundir.write_run_info, rundir.read_run_info, "run.json"),
    (FinalSummary(stopped="completed", epochs_completed=2), rundir.write_final, rundir.read_final, "final.json"),
], ids=["run_info", "final"])
def test_unknown_fields_are_kept_in_extra_and_written_back(tmp_path, record, write, read, filename):
    files = RunFiles(tmp_path)
    write(files, record)
    data = json.loads((tmp_path / filename).read_text())
    (tmp_path / filename).write_text(json.dumps({**data, "from_the_future": {"a": 1}}))
    read_back = read(tmp_path, strict=True)
    assert read_back.extra == {"from_the_future": {"a": 1}}
    write(files, read_back)  # a reader that rewrites the file loses nothing a newer writer put there
    assert json.loads((tmp_path / filename).read_text()) == {**data, "from_the_future": {"a": 1}}


def test_an_evaluation_is_read_from_its_split_and_tta_folder(tmp_path):
    files = RunFiles(tmp_path)
    assert rundir.read_evaluation(tmp_path, "test") is None
    files.eval_metrics("test", tta=True).parent.mkdir(parents=True)
    files.eval_metrics("test", tta=True).write_text(json.dumps({"overall": {"dice": 0.5}, "images": []}))
    assert rundir.read_evaluation(tmp_path, "test") is None  # plain and TTA evaluations are apart
    assert rundir.read_evaluation(tmp_path, "test", tta=True, strict=True)["overall"] == {"dice": 0.5}


def _write_empty(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")


READERS = {
    "metrics": (lambda run, strict: rundir.read_metrics(run, strict=strict), lambda files: files.metrics, []),
    "final": (lambda run, strict: rundir.read_final(run, strict=strict), lambda files: files.final, None),
    "run_info": (lambda run, strict: rundir.read_run_info(run, strict=strict), lambda files: files.run_info, None),
    "evaluation": (lambda run, strict: rundir.read_evaluation(run, "val", strict=strict),
                   lambda files: files.eval_metrics("val"), None),
}


@pytest.mark.parametrize("reader", READERS)
def test_every_reader_missing_empty_and_unreadable(tmp_path, reader):
    """Missing is a run not that far yet, for every reader; empty or a folder is damage only to strict ones."""
    read, path_of, nothing = READERS[reader]
    path = path_of(RunFiles(tmp_path))
    assert read(tmp_path, False) == nothing and read(tmp_path, True) == nothing  # missing
    assert read(tmp_path / "no-such-run", True) == nothing
    _write_empty(path)
    assert read(tmp_path, False) == nothing
    if reader == "metrics":  # no line yet: no finished epoch, which is no damage
        assert read(tmp_path, True) == []
    else:  # final.json, run.json and an evaluation are written whole, atomically: empty is damage
        with pytest.raises(rundir.DamagedRunFile, match=f"{path.name}: damaged, not JSON"):
            read(tmp_path, True)
    path.unlink()
    path.mkdir()
    assert read(tmp_path, False) == nothing
    with pytest.raises(rundir.DamagedRunFile, match=f"{path.name}: damaged, cannot be read as text"):
        read(tmp_path, True)

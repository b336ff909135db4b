"""The experiment index and the status readers, without any cluster."""
from __future__ import annotations


import pytest

from steelseg_hpc.core.errors import LaunchError
from steelseg_hpc.launch.index import ExperimentIndex, JobRow
from steelseg_hpc.launch.status import tail


def _row(job_id: str, run_dir: str, experiment: str = "e", arch: str = "unet3plus") -> JobRow:
    return JobRow(job_id, experiment, arch, 0, run_dir, "slurm", "out", "err", 2)


def test_index_records_and_keeps_the_latest_job_per_run(tmp_path):
    index = ExperimentIndex(tmp_path / "i.sqlite")
    index.record_experiment("e", tmp_path, "exp.toml", "p.toml", "slurm")
    index.record_job(_row("1_0", "/r/a"))
    index.record_job(_row("1_1", "/r/b", arch="elunet"))
    index.record_job(_row("2", "/r/a"))  # a relaunch resumes run a
    assert [r.job_id for r in index.jobs("e")] == ["1_1", "2"]
    assert [r.job_id for r in index.jobs("e", latest_only=False)] == ["1_0", "1_1", "2"]
    assert index.find_job("1_1").arch == "elunet"
    assert index.experiments() == ["e"]


def test_index_errors_are_launch_errors(tmp_path):
    index = ExperimentIndex(tmp_path / "none.sqlite")
    with pytest.raises(LaunchError, match="no experiment index"):
        index.jobs("e")
    index.record_experiment("e", tmp_path, None, None, "local")
    with pytest.raises(LaunchError, match="job '9' is not in the experiment index"):
        index.find_job("9")


def test_index_path_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("STEELSEG_INDEX", str(tmp_path / "x.sqlite"))
    assert ExperimentIndex().path == tmp_path / "x.sqlite"


def test_tail_of_a_log(tmp_path):
    log = tmp_path / "err"
    log.write_text("\n".join(f"line {i}" for i in range(100)) + "\n\n")
    assert tail(log, 3) == ["line 97", "line 98", "line 99"]
    assert tail(tmp_path / "missing") == []


def test_failure_reason_is_an_error_line_never_a_library_notice(tmp_path):
    from steelseg_hpc.launch.status import ERROR_MARKER, failure_reason

    stderr = tmp_path / "err"
    stderr.write_text("W1201 22:26:18.520000 5830 torch/utils/cpp_extension.py:183] No CUDA runtime is found, "
                      "using CUDA_HOME='/usr/local'\n")
    assert failure_reason(stderr) == ""
    stderr.write_text("Traceback (most recent call last):\nValueError: bad tile\nW1201 notice\n")
    assert failure_reason(stderr) == "ValueError: bad tile"
    stderr.write_text(f"{ERROR_MARKER} DataError: store gone\nW1201 notice\n")
    assert failure_reason(stderr) == "DataError: store gone"

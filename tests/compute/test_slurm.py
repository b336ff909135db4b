"""Reading what SLURM's commands print, without any cluster."""
from __future__ import annotations

import pytest

from steelseg_hpc.compute import slurm
from steelseg_hpc.compute.slurm import parse_gpu_count
from steelseg_hpc.core.errors import LaunchError


@pytest.mark.parametrize("gres, gpus", [("gpu:2", 2), ("gpu:h100:8(S:0-1)", 8), ("(null)", 0),
                                        ("gpu:a100:2,gpu:v100:1", 3), ("mps:100", 0)])
def test_gpu_count_from_gres(gres, gpus):
    assert parse_gpu_count(gres) == gpus


class _Controller:
    """An action that fails with ``message`` ``failures`` times, then answers."""

    def __init__(self, failures: int, message: str = "squeue: error: Unable to contact slurm controller "
                                                     "(connect failure)"):
        self.failures, self.message, self.calls = failures, message, 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise LaunchError(f"squeue failed: {self.message}")
        return "answer"


@pytest.fixture()
def no_sleep(monkeypatch):
    slept = []
    monkeypatch.setattr(slurm.time, "sleep", slept.append)
    return slept


def test_a_controller_that_comes_back_is_ridden_out_with_one_line_each_way(no_sleep, caplog):
    controller = _Controller(failures=3)
    with caplog.at_level("WARNING", logger=slurm.__name__):
        assert slurm.ride_out(controller, "squeue", wait_s=60) == "answer"
    assert controller.calls == 4 and no_sleep == [1.0, 2.0, 4.0]  # backing off
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 2
    assert lines[0].startswith("SLURM is not answering (squeue: Unable to contact slurm controller")
    assert "for up to 60 s" in lines[0] and lines[1].startswith("SLURM answers again (squeue")


def test_the_wait_is_bounded(no_sleep, monkeypatch):
    clock = iter(range(0, 1000, 10))
    monkeypatch.setattr(slurm.time, "monotonic", lambda: next(clock))
    with pytest.raises(LaunchError, match="Unable to contact"):
        slurm.ride_out(_Controller(failures=1000), "squeue", wait_s=30)
    assert sum(no_sleep) <= 30


def test_other_errors_and_maybe_delivered_submissions_are_not_asked_again(no_sleep):
    refused = _Controller(failures=1, message="sbatch: error: Invalid partition name specified")
    with pytest.raises(LaunchError, match="Invalid partition"):
        slurm.ride_out(refused, "sbatch", never_sent=True)
    # A timed-out submission may have been queued: sending it again could queue it twice.
    maybe_queued = _Controller(failures=1, message="sbatch: error: Socket timed out on send/recv operation")
    with pytest.raises(LaunchError, match="Socket timed out"):
        slurm.ride_out(maybe_queued, "sbatch", never_sent=True)
    assert refused.calls == maybe_queued.calls == 1 and no_sleep == []
    assert slurm.ride_out(_Controller(failures=1), "sbatch", never_sent=True) == "answer"  # connect failure

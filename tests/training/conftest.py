"""Session fixture: one complete tiny UNet 3+ run that several training tests read."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.training.helpers import TINY_UNET, run_cli


@pytest.fixture(scope="session")
def unet_run(tiny_store, tmp_path_factory) -> Path:
    """One complete 3-epoch, one-process ZeRO-2 UNet 3+ run (shared by several tests), at precision
    auto: bf16 where this CPU computes it natively, fp32 where bf16 would be ~16x slower."""
    run_dir = tmp_path_factory.mktemp("runs") / "unet"
    result = run_cli(["train", "--store", str(tiny_store), "--run-dir", str(run_dir), *TINY_UNET,
                      "--set", "progress=true"])
    # what a user reading the job's log (not a terminal) saw, for the console tests
    (run_dir.parent / "stdout.txt").write_text(result.stdout)
    (run_dir.parent / "stderr.txt").write_text(result.stderr)
    return run_dir

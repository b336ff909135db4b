"""Reading what SLURM's commands print, without any cluster."""
from __future__ import annotations

import pytest

from steelseg_hpc.compute.slurm import parse_gpu_count


@pytest.mark.parametrize("gres, gpus", [("gpu:2", 2), ("gpu:h100:8(S:0-1)", 8), ("(null)", 0),
                                        ("gpu:a100:2,gpu:v100:1", 3), ("mps:100", 0)])
def test_gpu_count_from_gres(gres, gpus):
    assert parse_gpu_count(gres) == gpus

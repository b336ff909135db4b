"""``steelseg-hpc models``: a thin command over profiling.profile_zoo."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from steelseg_hpc.cli import main

TINY = ["--tile", "32", "--batch", "1", "--base-channels", "4"]


@pytest.mark.slow
def test_json_lists_params_gflops_and_memory():
    result = CliRunner().invoke(main, ["models", "--json", *TINY, "--arch", "unet3plus",
                                       "--arch", "elunet-enhanced-glu"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert [row["name"] for row in payload["archs"]] == ["unet3plus", "elunet-enhanced-glu"]
    for row in payload["archs"]:
        assert row["params"] > 0 and row["gflops"] > 0 and row["peak_bytes"] > 0
    assert payload["tile"] == 32 and payload["batch"] == 1


def test_table_names_every_requested_architecture():
    result = CliRunner().invoke(main, ["models", *TINY, "--arch", "elunet"])
    assert result.exit_code == 0, result.output
    assert "elunet" in result.output and "GFLOPs" in result.output


def test_unknown_architecture_is_a_one_line_error():
    result = CliRunner().invoke(main, ["models", *TINY, "--arch", "resnet-nope"])
    assert result.exit_code == 2
    assert "unknown architecture" in result.output


def test_every_measurement_failing_is_a_failure_not_a_success():
    # a 16 px tile is smaller than the UNet 3+'s four poolings need
    result = CliRunner().invoke(main, ["models", "--tile", "16", "--batch", "1", "--base-channels", "4",
                                       "--arch", "unet3plus"])
    assert result.exit_code == 1, result.output
    assert "no architecture could be measured on cpu" in result.output


def test_a_device_this_machine_cannot_use_is_one_line_before_anything_runs():
    import torch

    missing = f"cuda:{torch.cuda.device_count()}"  # one past the last CUDA device, on any machine
    for device, expected in ((missing, "torch sees"), ("gpu0", "expected cpu, cuda or cuda:N")):
        result = CliRunner().invoke(main, ["models", *TINY, "--arch", "elunet", "--device", device])
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: device '{device}': ") and expected in lines[0]

"""benchmarks/train.py measures a real run: it drives ``train()`` (the Trainer, with hooks), so every
rule a run applies applies to the benchmark too (here: no noise-scale probes under ZeRO-3, whose
partitioned gradients they cannot read; the old benchmark assembled the engine itself and probed)."""
from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def benchmark():
    spec = importlib.util.spec_from_file_location("benchmark_train", REPO / "benchmarks" / "train.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["benchmark_train"] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("benchmark_train", None)


def _args(stage: int) -> argparse.Namespace:
    return argparse.Namespace(arch="unet3plus", base_channels=4, tile=32, micro_batch=2, accumulation=2, steps=2,
                              rounds=1, engine_stage=stage, set=['precision="fp32"'])


@pytest.mark.slow
@pytest.mark.parametrize("stage, probed", [(2, True), (3, False)])
def test_the_throughput_run_follows_the_engines_noise_scale_rule(benchmark, stage, probed, monkeypatch):
    for name, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"}.items():
        monkeypatch.setenv(name, value)
    from steelseg_hpc.training.distributed import free_port

    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    result = benchmark.throughput(_args(stage))
    assert result["noise_scale_measured"] is probed
    assert result["engine_tiles_per_s"] > 0 and result["plain_tiles_per_s"] > 0

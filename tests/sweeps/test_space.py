"""Sweep files and search spaces: what they accept, what they refuse, the trials they make."""
from __future__ import annotations

import pytest

from steelseg_hpc.core.errors import ConfigError
from steelseg_hpc.sweeps.analysis import bootstrap_critical_batch, fit_critical_batch
from steelseg_hpc.sweeps.config import SweepSpec, load_sweep
from steelseg_hpc.sweeps.space import SearchSpace, split_batch


def spec(**fields) -> SweepSpec:
    data = {"name": "s", "store": "s.zarr", "base": {"arch": "unet3plus"},
            "space": {"rank": {"key": "model.rank", "values": [0, 4]}}, **fields}
    return SweepSpec.model_validate(data)


def test_shipped_sweeps_load_and_make_their_trials():
    rank = SearchSpace(load_sweep("lora-rank"))
    assert [slot["rank"] for slot in rank.slots()] == [0, 4, 8, 16, 32, 64, 128, 256, 512]
    batch = SearchSpace(load_sweep("batch-lr"), world_size=1)
    slots = batch.slots()
    assert len(slots) == 21 and batch.sampled() == ["lr"]
    assert [s["batch"] for s in slots[:7]] == [1, 2, 4, 8, 16, 32, 64]  # every batch before any repeats


@pytest.mark.parametrize("fields, message", [
    ({"space": {"lr": {"key": "optimizer.lr", "low": 0.1, "high": 0.01}}, "sampler": {"kind": "tpe"}}, "empty or inverted"),
    ({"space": {"lr": {"key": "optimizer.lr", "low": 0.1, "high": 0.1}}, "sampler": {"kind": "tpe"}}, "empty or inverted"),
    ({"space": {"lr": {"key": "optimizer.lr", "values": []}}}, "values is empty"),
    ({"space": {"lr": {"key": "optimizer.lr", "low": 1e-4, "high": 1e-2}}}, "grid sampler needs values"),
    ({"space": {"s": {"key": "seed", "values": [1, 2]}}}, "seed is not a search-space key"),
    ({"samplr": {"kind": "tpe"}}, "samplr"),
])
def test_bad_sweep_files_are_refused(fields, message):
    with pytest.raises(Exception, match=message):
        spec(**fields)


def test_a_space_key_that_is_not_a_run_config_key_or_a_rejected_value_names_it():
    unknown = SearchSpace(spec(space={"x": {"key": "optimizer.lrr", "values": [0.1]}}))
    with pytest.raises(ConfigError, match=r"f\.toml: space\.x \(optimizer\.lrr\) = 0\.1: .*optimizer\.lrr"):
        unknown.validate("f.toml")
    rank = SearchSpace(spec(base={"arch": "sam-lora", "overrides": ['model.variant="tiny"']},
                            space={"rank": {"key": "model.rank", "values": [4, -1]}}))
    with pytest.raises(ConfigError, match=r"space\.rank \(model\.rank\) = -1: .*rank"):
        rank.validate("f.toml")


def test_a_batch_the_gpus_cannot_reach_is_refused():
    assert split_batch(64, 2, 8) == (8, 4) and split_batch(1, 1, 8) == (1, 1) and split_batch(12, 1, 8) == (6, 2)
    # one rank accumulates two micro-batches where it can, so every trial measures B_simple
    assert split_batch(2, 1, 8) == (1, 2) and split_batch(8, 1, 8) == (4, 2) and split_batch(7, 1, 8) == (1, 7)
    space = SearchSpace(spec(space={"b": {"key": "global_batch", "values": [1, 4]}}), world_size=2)
    with pytest.raises(ConfigError, match="global_batch 1 cannot be reached with 2 rank"):
        space.validate("f.toml")


def test_seeds_of_a_drawn_point_share_its_values_and_lr_scales():
    space = SearchSpace(spec(seeds=[0, 1], sampler={"kind": "random"}, lr_scaling="sqrt", lr_reference_batch=4,
                             space={"b": {"key": "global_batch", "values": [4, 16], "stratify": True},
                                    "lr": {"key": "optimizer.lr", "low": 1e-4, "high": 1e-2, "log": True}}))
    assert [space.sibling(i) for i in range(4)] == [None, None, 0, 1]
    overrides = space.overrides({"b": 16, "lr": 0.001, "seed": 1})
    assert overrides == ["micro_batch=8", "grad_accumulation=2", "optimizer.lr=0.002", "seed=1"]


def test_critical_batch_fit_recovers_a_known_value():
    s_min, e_min = 400.0, 12800.0  # B_crit = 32
    batches = [2, 4, 8, 16, 32, 64, 128]
    exact = fit_critical_batch(batches, [s_min + e_min / b for b in batches])
    assert exact["b_crit"] == pytest.approx(32.0)
    noisy_steps = [(s_min + e_min / b) * (1 + 0.03 * (-1) ** i) for i, b in enumerate(batches)]
    fit = fit_critical_batch(batches, noisy_steps)
    assert fit["b_crit"] == pytest.approx(32.0, rel=0.15)
    low, high = bootstrap_critical_batch(batches, noisy_steps)
    assert low < 32.0 < high
    assert fit_critical_batch([8, 8], [10, 12])["b_crit"] is None  # one batch size defines nothing
    assert fit_critical_batch([2, 4, 8], [10, 20, 40])["b_crit"] is None  # steps that grow with B

"""Experiments over folds (one store per fold, by a pattern) that evaluate after training."""
from __future__ import annotations

import json

import pytest

from steelseg_hpc.compute.profiles import load_profile
from steelseg_hpc.core.errors import ConfigError, LaunchError
from steelseg_hpc.launch import submit_experiment
from steelseg_hpc.launch.config import Experiment, load_experiment
from steelseg_hpc.launch.validate import check_experiment
from steelseg_hpc.models import architectures
from steelseg_hpc.training.config import config_differences

from .conftest import REPO, TINY_RUN, wait_for_jobs

METALDAM_EXPERIMENT = REPO / "launch" / "experiments" / "metaldam.toml"
CNNS = [arch.name for arch in architectures() if arch.family in ("unet3plus", "elunet")]


def _fold_stores(folder, store, folds):
    """A store pattern in ``folder`` whose fold stores are links to one real store."""
    for fold in folds:
        (folder / f"fold{fold}.zarr").symlink_to(store, target_is_directory=True)
    return str(folder / "fold{fold}.zarr")


def test_one_run_per_fold_architecture_and_seed_on_its_fold_store(tmp_path):
    exp = Experiment(name="cv", architectures=["unet3plus", "elunet"], seeds=[0, 1], folds=[2, 5],
                     store="st/md-fold{fold}.zarr", runs_root=tmp_path)
    runs = exp.runs()
    assert len(runs) == 8 and len({run.run_dir for run in runs}) == 8
    assert [(r.fold, r.arch, r.seed) for r in runs[:3]] == [(2, "unet3plus", 0), (2, "unet3plus", 1),
                                                            (2, "elunet", 0)]
    assert runs[0].run_dir == tmp_path / "cv" / "unet3plus-f2-s0"
    assert {str(r.store) for r in runs} == {"st/md-fold2.zarr", "st/md-fold5.zarr"}
    plain = Experiment(name="one", architectures=["elunet"], store="s.zarr").runs()
    assert [(r.name, r.fold, str(r.store)) for r in plain] == [("elunet-s0", None, "s.zarr")]


@pytest.mark.parametrize("fields, message", [
    ({"folds": [0, 1]}, "need a store pattern with {fold}"),
    ({"store": "md-fold{fold}.zarr"}, "has {fold} but the experiment has no folds"),
    ({"folds": [1, 1], "store": "md-fold{fold}.zarr"}, "duplicates"),
    ({"evaluate": ["test", "test"]}, "duplicates"),
])
def test_bad_fold_settings_are_one_line_errors(tmp_path, fields, message):
    path = tmp_path / "exp.toml"
    data = {"name": "e", "store": "s.zarr", **fields}
    path.write_text("\n".join(f"{k} = {json.dumps(v)}" for k, v in data.items()))
    with pytest.raises(ConfigError, match=message) as err:
        load_experiment(path)
    assert "\n" not in str(err.value)


def test_every_fold_store_is_checked_and_each_run_trains_on_its_own(tiny_store, tmp_path):
    pattern = _fold_stores(tmp_path, tiny_store, [0])
    exp = Experiment(name="cv", architectures=["unet3plus"], folds=[0, 1], store=pattern,
                     overrides=TINY_RUN, runs_root=tmp_path)
    with pytest.raises(LaunchError, match="fold1.zarr does not exist"):
        check_experiment(exp)
    (tmp_path / "fold1.zarr").symlink_to(tiny_store, target_is_directory=True)
    resolved = check_experiment(exp)
    assert [item.config.data.store for item in resolved] == [str(tmp_path / "fold0.zarr"),
                                                             str(tmp_path / "fold1.zarr")]


def test_evaluated_splits_must_keep_whole_images(tiny_store, tmp_path):
    exp = Experiment(name="e", architectures=["unet3plus"], store=tiny_store, evaluate=["train"],
                     overrides=TINY_RUN, runs_root=tmp_path)
    with pytest.raises(ConfigError, match="keeps no whole images of train"):
        check_experiment(exp)


def test_the_metaldam_experiment_validates_against_a_real_store(tiny_store_5, tmp_path):
    pattern = _fold_stores(tmp_path, tiny_store_5, [0])
    exp = load_experiment(METALDAM_EXPERIMENT, [f"store={json.dumps(pattern)}"])
    assert exp.architectures == CNNS and len(CNNS) == 6
    assert exp.folds == [0] and exp.evaluate == ["test"]
    resolved = check_experiment(exp)
    assert [item.run.arch for item in resolved] == CNNS
    for item in resolved:
        config = item.config
        assert config.time_budget_s == 150 and config.eval.tta and config.channels_last
        assert not config.compile  # its compile seconds would count against the budget
        assert config.data.store == str(tmp_path / "fold0.zarr")
    all_folds = load_experiment(METALDAM_EXPERIMENT, [f"store={json.dumps(pattern)}", "folds=[0,1,2,3,4,5]"])
    assert len(all_folds.runs()) == 36


def test_the_skip_order_experiment_differs_from_metaldam_only_in_the_skip_order(tiny_store_5, tmp_path):
    pattern = _fold_stores(tmp_path, tiny_store_5, [0])
    store = [f"store={json.dumps(pattern)}"]
    paper = {item.run.arch: item.config for item in check_experiment(load_experiment(METALDAM_EXPERIMENT, store))}
    variant = check_experiment(load_experiment(METALDAM_EXPERIMENT.with_name("metaldam-skip-order.toml"), store))
    assert [item.run.arch for item in variant] == ["unet3plus", "elunet"]
    for item in variant:
        assert config_differences(paper[item.run.arch], item.config) == [
            "model.skip_order: None -> 'conv-then-resample'"]


@pytest.mark.slow
def test_a_job_evaluates_its_splits_with_flips_after_a_budget_run(tiny_store, tmp_path, index):
    exp = Experiment(name="budget", architectures=["unet3plus"], store=tiny_store, evaluate=["test"],
                     overrides=TINY_RUN + ["time_budget_s=0.001", "eval.tta=true"], runs_root=tmp_path)
    (row,) = submit_experiment(exp, load_profile(REPO / "launch" / "local.toml"), index)
    (status,) = wait_for_jobs("budget", index, timeout=300)
    assert status.state == "COMPLETED", (status.reason, status.stderr_tail)
    run_dir = tmp_path / "budget" / "unet3plus-s0"
    assert json.loads((run_dir / "final.json").read_text())["stopped"] == "time-budget"
    result = json.loads((run_dir / "eval" / "test-tta" / "metrics.json").read_text())
    assert result["tta"] is True and result["overall"]["miou"] is not None

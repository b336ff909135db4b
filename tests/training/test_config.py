"""Run config: defaults, file < flags < --set, model options checked, resume differences."""
import pytest

from steelseg_hpc.core.errors import ConfigError
from steelseg_hpc.training.config import config_differences, load_run_config, load_saved_config
from steelseg_hpc.training.deepspeed_config import build_deepspeed_config


def test_priority_file_then_flags_then_overrides(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('epochs = 7\nmicro_batch = 3\n[model]\nname = "unet3plus"\nbase_channels = 8\n'
                    '[optimizer]\nlr = 0.5\n')
    cfg = load_run_config(path, ["model.base_channels=4", "optimizer.weight_decay=0.1"], epochs=2, lr=None)
    assert cfg.epochs == 2 and cfg.micro_batch == 3 and cfg.optimizer.lr == 0.5
    assert cfg.model.options() == {"base_channels": 4}
    assert cfg.optimizer.weight_decay == 0.1


@pytest.mark.parametrize("override", ["optimiser.lr=1", "epochz=3", "loss.sam.focal=1", "model.no_such_option=3"])
def test_unknown_keys_are_errors(override):
    with pytest.raises(ConfigError):
        load_run_config(None, [override])


def test_bad_values_are_errors():
    with pytest.raises(ConfigError, match="zero_stage"):
        load_run_config(None, [], zero_stage=4)
    with pytest.raises(ConfigError, match="precision"):
        load_run_config(None, ["precision=fp16"])


def test_resolved_config_round_trips_and_reports_differences(tmp_path):
    cfg = load_run_config(None, ["model.base_channels=4", "data.num_workers=0"], store="s.zarr")
    (tmp_path / "config.toml").write_text(cfg.to_toml())
    saved = load_saved_config(tmp_path / "config.toml")
    assert saved == cfg
    changed = load_run_config(None, ["model.base_channels=8", "data.num_workers=3"], store="s.zarr")
    assert config_differences(saved, changed) == ["model.base_channels: 4 -> 8"]


def test_deepspeed_config_uses_torch_autocast_not_bf16_section():
    cfg = load_run_config(None, ["micro_batch=2", "grad_accumulation=3", "grad_clip=0.5"], zero_stage=2)
    ds = build_deepspeed_config(cfg, world_size=2, steps_per_epoch=10, precision="bf16")
    assert ds["train_batch_size"] == 12
    assert "bf16" not in ds and ds["torch_autocast"] == {"enabled": True, "dtype": "bfloat16"}
    assert ds["optimizer"]["params"]["torch_adam"] is True
    assert ds["scheduler"]["params"]["total_num_steps"] == 10 * cfg.epochs
    assert ds["scheduler"]["params"]["warmup_num_steps"] == 10
    assert ds["gradient_clipping"] == 0.5
    fp32 = build_deepspeed_config(load_run_config(None, [], precision="fp32"), 1, 5, precision="fp32")
    assert "torch_autocast" not in fp32 and "bf16" not in fp32


def test_raising_epochs_or_patience_is_an_extension_and_lowering_them_is_a_difference():
    saved = load_run_config(None, ["patience=2"], epochs=3)
    more = load_run_config(None, ["patience=4"], epochs=5)
    assert config_differences(saved, more) == []
    fewer = load_run_config(None, ["patience=1"], epochs=2)
    assert config_differences(saved, fewer) == ["epochs: 3 -> 2", "patience: 2 -> 1"]
    never_stop = load_run_config(None, ["patience=0"], epochs=3)  # 0 = never stop early: more patience
    assert config_differences(saved, never_stop) == [] and config_differences(never_stop, saved) != []


def test_precision_defaults_to_auto():
    assert load_run_config(None, []).precision == "auto"


@pytest.mark.parametrize("arch, option, expected", [
    ("unet3plus", "base_channels=abc", "model.base_channels: expected a valid integer, got 'abc'"),
    ("elunet", "deep_supervision=1", "model.deep_supervision: expected a valid boolean, got 1"),
    ("elunet-enhanced", "pooling=3", "model.pooling: expected a valid string, got 3"),
    ("unet3plus", "dilation_rates=[1, 'x']", "model.dilation_rates: expected a valid integer, got [1, 'x']"),
    ("sam-lora", "box_dice_weight='heavy'", "model.box_dice_weight: expected a valid number, got 'heavy'"),
])
def test_a_model_option_of_the_wrong_type_names_the_field_and_its_type(tmp_path, arch, option, expected):
    from click.testing import CliRunner

    from steelseg_hpc.cli import main

    result = CliRunner().invoke(main, ["train", "--arch", arch, "--store", str(tmp_path / "s.zarr"),
                                       "--run-dir", str(tmp_path / "run"), "--set", f"model.{option}"])
    assert result.exit_code == 2 and result.output.strip() == f"error: {expected}"
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("mode", ["split", "dropin"])
def test_the_benchmarks_naive_glu_blocks_are_not_a_model_option(tmp_path, mode):
    from click.testing import CliRunner

    from steelseg_hpc.cli import main

    result = CliRunner().invoke(main, ["train", "--arch", "unet3plus-enhanced-glu", "--store", str(tmp_path / "s.zarr"),
                                       "--run-dir", str(tmp_path / "run"), "--set", f"model.glu_mode='{mode}'"])
    assert result.exit_code == 2
    assert result.output.strip() == f"error: model: glu_mode {mode!r} is not one of: pointwise, full"
    assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match="glu_mode"):
        load_run_config(None, ["model.name='elunet-enhanced-glu'", f"model.glu_mode='{mode}'"])

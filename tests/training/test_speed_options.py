"""Run-level speed options (issue 13): ``channels_last`` and ``compile``, in the engine's step."""
from __future__ import annotations

import json

import pytest
import torch

from steelseg_hpc.models import build_model
from steelseg_hpc.training.config import load_run_config
from steelseg_hpc.training.engine import TrainStep, build_loss, build_model_for_run
from tests.training.helpers import read_metrics, run_cli

TINY_FP32 = [
    "--arch", "unet3plus", "--epochs", "1", "--batch-size", "2", "--precision", "fp32",
    "--set", "model.base_channels=4", "--set", "data.num_workers=0", "--set", "data.max_train_tiles=12",
    "--set", "grad_accumulation=2", "--set", "progress=false",
]


def _step_loss_and_grads(step: TrainStep, images, masks):
    step.zero_grad(set_to_none=True)
    loss, logits = step(images, masks)
    loss.backward()
    return loss.detach(), logits, {n: p.grad.clone() for n, p in step.model.named_parameters()}


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def test_channels_last_step_equals_the_default_step():
    plain_cfg = load_run_config(None, ["model.base_channels=4"])
    cl_cfg = load_run_config(None, ["model.base_channels=4", "channels_last=true"])
    plain = TrainStep(build_model_for_run(plain_cfg, 3), build_loss(plain_cfg, 3)).train()
    other = TrainStep(build_model_for_run(cl_cfg, 3), build_loss(cl_cfg, 3),
                      channels_last=cl_cfg.channels_last).train()
    assert torch.equal(next(iter(plain.model.state_dict().values())),
                       next(iter(other.model.state_dict().values())))  # seeded alike
    torch.manual_seed(1)
    images, masks = torch.rand(2, 1, 64, 64), torch.randint(0, 3, (2, 64, 64))
    loss, logits, grads = _step_loss_and_grads(plain, images, masks)
    cl_loss, cl_logits, cl_grads = _step_loss_and_grads(other, images, masks)
    assert cl_logits.is_contiguous(memory_format=torch.channels_last) and not cl_logits.is_contiguous()
    torch.testing.assert_close(cl_loss, loss, rtol=1e-5, atol=1e-6)
    assert _relative(cl_logits, logits) < 1e-4
    # PyTorch's CPU BatchNorm kernel for channels-last sums its statistics less precisely than
    # the contiguous one (about 10x the error against float64 on maps with a large mean), and
    # through 20 BatchNorms and the MS-SSIM loss that reaches 1e-3 in some gradients.
    errors = sorted(_relative(cl_grads[key], grads[key]) for key in grads)
    assert errors[len(errors) // 2] < 3e-3 and errors[-1] < 3e-2, errors[-5:]


def test_speed_options_default_off_and_may_change_on_resume():
    from steelseg_hpc.training.config import config_differences

    cfg = load_run_config(None, [])
    assert (cfg.channels_last, cfg.compile, cfg.time_budget_s) == (False, False, 0.0)
    faster = load_run_config(None, ["channels_last=true", "compile=true", "model.activation_checkpointing=true"])
    assert config_differences(cfg, faster) == []
    assert config_differences(cfg, load_run_config(None, ["model.skip_order=conv-then-resample"])) != []


def _compile_problem() -> str | None:
    from steelseg_hpc.training.compiling import compile_problem

    return compile_problem("cpu")


@pytest.mark.slow
def test_a_compiled_model_computes_what_the_eager_one_does():
    problem = _compile_problem()
    if problem is not None:
        pytest.skip(f"torch.compile cannot run on this machine: {problem}")
    torch.manual_seed(0)
    eager = build_model("unet3plus", base_channels=4).train()
    compiled = build_model("unet3plus", base_channels=4).train()
    compiled.load_state_dict(eager.state_dict())
    compiled.compile()
    images, masks = torch.rand(2, 1, 64, 64), torch.randint(0, 3, (2, 64, 64))
    results = []
    for model in (eager, compiled):
        logits = model(images)
        torch.nn.functional.cross_entropy(logits, masks).backward()
        results.append((logits.detach(), {n: p.grad for n, p in model.named_parameters()}))
    (logits, grads), (c_logits, c_grads) = results
    assert compiled._compiled_call_impl is not None
    torch.testing.assert_close(c_logits, logits, rtol=1e-4, atol=1e-5)
    for key in grads:
        torch.testing.assert_close(c_grads[key], grads[key], rtol=1e-3, atol=1e-5)
    assert list(compiled.state_dict()) == list(eager.state_dict())  # checkpoints stay loadable


@pytest.mark.slow
def test_compile_where_it_cannot_run_is_one_line_at_the_start(tiny_store, tmp_path, monkeypatch):
    # No C++ compiler for inductor, and a fresh cache so nothing compiled earlier is reused.
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    result = run_cli(["train", "--store", str(tiny_store), "--run-dir", str(tmp_path / "run"),
                      *TINY_FP32, "--set", "compile=true"], check=False)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "compile = true" in lines[0] and "C++ compiler" in lines[0], result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


@pytest.mark.slow
def test_a_compiled_run_keeps_compilation_out_of_tiles_per_s(tiny_store, tmp_path):
    if _compile_problem() is not None:
        pytest.skip(f"torch.compile cannot run on this machine: {_compile_problem()}")
    eager_dir, compiled_dir = tmp_path / "eager", tmp_path / "compiled"
    run_cli(["train", "--store", str(tiny_store), "--run-dir", str(eager_dir), *TINY_FP32])
    run_cli(["train", "--store", str(tiny_store), "--run-dir", str(compiled_dir), *TINY_FP32,
             "--set", "compile=true"], timeout=600)
    (eager,), (row,) = read_metrics(eager_dir), read_metrics(compiled_dir)
    assert eager["compile_seconds"] is None
    assert 0 < row["compile_seconds"] < row["train_seconds"]
    # tiles/s counts the steps after the first: 12 tiles in 3 steps of 4, so 8 tiles in the rest.
    rest_seconds = row["train_seconds"] - row["compile_seconds"]
    assert row["tiles_per_s"] * rest_seconds == pytest.approx(12 - row["global_batch"], rel=1e-6)
    assert row["tiles_per_s"] > 12 / row["train_seconds"]
    # The compiled model trains like the eager one: the same first-epoch loss within float error.
    assert row["train_loss"] == pytest.approx(eager["train_loss"], rel=1e-4)
    final = json.loads((compiled_dir / "final.json").read_text())
    assert final["stopped"] == "completed"

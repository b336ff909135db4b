"""Every GPU target of issue 13 in one command: each figure beside its target and the anchors.

Usage::

    python benchmarks/gpu.py --json                      # CUDA, paper scale, under 8 minutes
    python benchmarks/gpu.py --device cpu --tiny --json  # the same code path at tiny sizes
    bash benchmarks/gpu.sh                               # on the GPU machine: wheels, then this

The figures come from the suite's own engine: a ``training.trainer.Trainer`` built from a run
config (DeepSpeed ZeRO-2, the epoch loop, noise-scale probes and train metrics on, every rule of
a run), timed by Trainer hooks at each optimiser step, the focal + Jaccard + MS-SSIM loss,
precision ``auto`` (bf16 on an H100/H200), and tiles read from a Zarr store that this script
synthesises and preps first (``synth`` + ``prep``). Two comparison cases leave one thing out
each: the same engine on tiles already on the device (is the loader the bottleneck?) and a plain
PyTorch loop (AdamW, autocast, clipping) on the same model, loss and device tiles (what does the
engine cost?).

Each case runs in its own process, so its peak memory is its own and an out-of-memory case fails
alone. It trains one warm-up epoch (cuDNN algorithm choice, allocator growth, torch.compile), then
``timed_epochs`` epochs of ``steps`` optimiser steps; the best epoch's tiles/s is its figure (on a
GPU the epoch ends with a synchronise). Cases run in order of importance until ``--budget-s`` is
spent; a case that would not fit is reported as skipped, never guessed.

``--json`` prints one object: ``targets`` (each with ``value``, ``goal``, ``met`` and the issue's
``anchors``), ``cases`` (every measurement) and the device, versions and date. At ``--tiny``
sizes the figures test the code path, not the targets: ``met`` is null.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

# The measurements (issue 13): the lab's logs and plain PyTorch on one H200 (synthetic
# data already on the GPU, cross-entropy loss).
ANCHORS = {
    "unet3plus": {"lab (21 min/epoch, batch 16)": 3.6, "plain fp32/TF32 batch 8 (128 GiB)": 4.8,
                  "plain bf16 batch 8 (72 GiB)": 6.0, "plain bf16 + channels_last batch 16": "fails: INT_MAX upsample",
                  "plain bf16 + channels_last + compile batch 16 (103 GiB)": 9.0,
                  "physical limit (11.6 TFLOP/tile at ~790 TFLOP/s)": 68},
    "enhanced_glu_vs_enhanced": {"lab (11 h vs 42 min per epoch)": round(11 * 60 / 42, 1)},
    "enhanced_vs_vanilla": {"lab (42 vs 21 min per epoch)": 2.0},
    "sam": {"lab rank 512 (62.7 min/epoch)": 1.19, "plain vit_b r512 1024² bf16 batch 1 (8.9 GiB)": 11.3,
            "plain batch 4, tiles/s": 15.5},
}


@dataclass(frozen=True)
class Scale:
    """Sizes of one run of the benchmark: the paper's on a GPU, or tiny ones for a CPU smoke run."""

    name: str
    tile: int
    sam_tile: int
    image_size: tuple[int, int]
    groups: tuple[int, ...]
    cnn_options: tuple[str, ...]      # run-config overrides for every CNN case (width)
    sam_options: tuple[str, ...]
    batch16: tuple[int, int]          # (micro, accumulation) of the lab's batch 16 by accumulation
    full_micro: int                   # the lab's batch in one micro-batch (checkpointing, compile)
    small_micro: int                  # the Enhanced comparison (Enhanced* does not fit batch 16)
    steps: int
    timed_epochs: int
    workers: int
    case_cap_s: float
    compile_cap_s: float


PAPER = Scale("paper", tile=800, sam_tile=1024, image_size=(1660, 1640), groups=(3, 3),
              cnn_options=(), sam_options=("model.variant=vit_b", "model.rank=512", "model.image_size=1024"),
              batch16=(8, 2), full_micro=16, small_micro=4, steps=3, timed_epochs=2, workers=8,
              case_cap_s=150, compile_cap_s=300)
TINY = Scale("tiny", tile=64, sam_tile=64, image_size=(128, 112), groups=(3, 3, 3),
             cnn_options=("model.base_channels=4",), sam_options=("model.variant=tiny", "model.rank=4"),
             batch16=(2, 2), full_micro=4, small_micro=2, steps=2, timed_epochs=1, workers=0,
             case_cap_s=120, compile_cap_s=400)


@dataclass(frozen=True)
class Case:
    """One measurement: an architecture with run-config overrides, a data source and a loop."""

    name: str
    arch: str
    micro: int
    accumulation: int
    overrides: tuple[str, ...] = ()
    data: str = "store"             # "store" (Zarr, loader workers) or "device" (tiles already there)
    loop: str = "engine"            # "engine" (the Trainer) or "plain"
    store: str = "cnn"              # "cnn" or "sam"
    cap_s: float = 150.0
    note: str = ""


def plan(scale: Scale, with_compile: bool) -> list[Case]:
    """The cases in order of importance (the budget may cut the tail)."""
    cnn, cap = scale.cnn_options, scale.case_cap_s
    micro, accumulation = scale.batch16
    cl = ("channels_last=true",)
    cases = [
        Case("unet3plus-b16-accumulation", "unet3plus", micro, accumulation, cnn + cl, cap_s=cap,
             note="batch 16 as micro-batches x accumulation"),
        Case("unet3plus-b16-accumulation-device-data", "unet3plus", micro, accumulation, cnn + cl,
             data="device", cap_s=cap, note="the same, tiles already on the device"),
        Case("unet3plus-b16-accumulation-plain-loop", "unet3plus", micro, accumulation, cnn + cl,
             data="device", loop="plain", cap_s=cap, note="plain PyTorch loop, same model, loss, tiles"),
        Case("unet3plus-conv-then-resample-b16", "unet3plus", scale.full_micro, 1,
             cnn + cl + ("model.skip_order=conv-then-resample",), cap_s=cap),
        Case("unet3plus-small-batch", "unet3plus", scale.small_micro, 1, cnn + cl, cap_s=cap),
        Case("unet3plus-enhanced-small-batch", "unet3plus-enhanced", scale.small_micro, 1, cnn + cl, cap_s=cap),
        Case("unet3plus-enhanced-glu-small-batch", "unet3plus-enhanced-glu", scale.small_micro, 1, cnn + cl,
             cap_s=cap),
        Case("sam-lora-b1", "sam-lora", 1, 1,
             scale.sam_options + cl + ("model.prompt=box", "model.max_boxes=4"), store="sam", cap_s=cap,
             note="box prompts, the 4 largest components of each tile (the anchor's 4 boxes)"),
        Case("unet3plus-b16-checkpointing", "unet3plus", scale.full_micro, 1,
             cnn + cl + ("model.activation_checkpointing=true",), cap_s=cap),
    ]
    if with_compile:
        cases.append(Case("unet3plus-b16-compile", "unet3plus", scale.full_micro, 1, cnn + cl + ("compile=true",),
                          cap_s=scale.compile_cap_s, note="torch.compile; compile seconds reported apart"))
    return cases


# --------------------------------------------------------------------------- one case (a process)

def _tiles_on_device(store: str, count: int, device):
    """The first ``count`` training tiles of the store, as tensors on ``device``."""
    import torch

    from steelseg_hpc.data import TileDataset

    tiles = TileDataset(store, "train")
    images, masks = zip(*(tiles[index] for index in range(count)))
    return torch.stack(images).to(device), torch.stack(masks).to(device)


def _peak(device, reset: bool = False) -> float:
    """Peak memory since the last reset: GPU max allocated (GiB), or the process's peak RSS (GiB)."""
    import torch

    from steelseg_hpc.training.host_facts import peak_memory_mb, reset_peak_memory

    if device.type == "cuda":
        if reset:
            torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.max_memory_allocated(device) / 2**30
    if reset:
        reset_peak_memory()
    return peak_memory_mb() / 1024


def run_case(spec: dict) -> dict:
    """Measure one case in this process; the result is a JSON-ready dict."""
    import torch
    from torch.utils.data import TensorDataset

    from steelseg_hpc.data import open_store
    from steelseg_hpc.training.config import load_run_config
    from steelseg_hpc.training.data_loading import build_loaders
    from steelseg_hpc.training.distributed import device_for, setup_distributed
    from steelseg_hpc.training.precision import resolve_precision

    case = Case(**spec["case"])
    store = spec["stores"][case.store]
    tiles = spec["steps"] * case.micro * case.accumulation
    workers = spec["workers"] if case.data == "store" else 0
    overrides = [*case.overrides, f"micro_batch={case.micro}", f"grad_accumulation={case.accumulation}",
                 f"data.max_train_tiles={tiles}", f"data.num_workers={workers}", "progress=false",
                 f"data.pin_memory={'true' if case.data == 'store' else 'false'}", "schedule.warmup_epochs=0"]
    config = load_run_config(None, overrides, arch=case.arch, store=store, zero_stage=2, precision="auto")
    env = setup_distributed()
    device = device_for(env)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    precision = resolve_precision(config.precision, device.type)
    num_classes = open_store(store).num_classes
    device_tiles = train_set = None
    if case.data == "device":
        device_tiles = _tiles_on_device(store, tiles, device)
        train_set = TensorDataset(*device_tiles)
    if case.loop == "engine":
        rates, compile_s, peak = _engine_epochs(config, env, store, train_set, spec, tiles)
    else:
        loaders = build_loaders(config, env.rank, env.world_size, train_set=train_set, val_set=train_set)
        if loaders.micro_batches_per_epoch * config.micro_batch != tiles:
            raise RuntimeError(f"the store has too few training tiles for {spec['steps']} steps")
        rates, compile_s, peak = _plain_epochs(config, device, device_tiles, num_classes, precision.resolved, spec)
    best = max(rates)
    global_batch = case.micro * case.accumulation
    return {"tiles_per_s": best, "step_s": global_batch / best, "epoch_tiles_per_s": rates,
            "peak_gib": peak, "compile_s": compile_s, "precision": precision.resolved,
            "global_batch": global_batch, "timed_tiles": tiles * spec["timed_epochs"],
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"}


def _engine_epochs(config, env, store: str, train_set, spec: dict, tiles: int):
    """The engine's tiles/s per timed epoch, the compile seconds and the peak memory, measured with
    Trainer hooks on a real Trainer (every rule of a run applies: noise-scale probes, ZeRO-3 ...)."""
    import tempfile

    import torch

    from steelseg_hpc.data import open_store, store_identity
    from steelseg_hpc.training.run_writer import RunWriter
    from steelseg_hpc.training.trainer import Trainer
    from steelseg_hpc.training.weights import base_identity

    config = config.model_copy(update={"epochs": 1 + spec["timed_epochs"], "patience": 0, "keep_checkpoints": 1})
    info = open_store(store)
    ends: list[float] = []
    rates: list[float] = []
    measured = {"peak": 0.0, "compile_s": None}
    global_batch = config.micro_batch * config.grad_accumulation * env.world_size

    def after_step(trainer, loss: float) -> None:
        if trainer.device.type == "cuda":
            torch.cuda.synchronize(trainer.device)
        ends.append(time.perf_counter())
        if trainer.state.epoch >= 1 and len(ends) > 1:  # a timed epoch, after its first step
            measured["peak"] = _peak(trainer.device)

    def after_epoch(trainer, row) -> None:
        if row.epoch == 1:
            measured["compile_s"] = row.compile_seconds
            _peak(trainer.device, reset=True)
        else:
            rates.append((len(ends) - 1) * global_batch / (ends[-1] - ends[0]))
        ends.clear()

    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer.setup(config, RunWriter(Path(tmp) / "run"), env, info,
                                base=base_identity(config.model.name, config.model.options(), config.seed),
                                identity=store_identity(info), train_set=train_set, val_set=train_set)
        if trainer.loaders.micro_batches_per_epoch * config.micro_batch != tiles:
            raise RuntimeError(f"the store has too few training tiles for {spec['steps']} steps")
        trainer.on_step_end.append(after_step)
        trainer.on_epoch_end.append(after_epoch)
        trainer.fit()
    return rates, measured["compile_s"], measured["peak"]


def _plain_epochs(config, device, device_tiles, num_classes, precision, spec):
    """A textbook loop over the same tiles: the model and loss of the engine, no DeepSpeed."""
    import torch

    from steelseg_hpc.training.engine import TrainStep, build_loss, build_model_for_run

    images, masks = device_tiles
    model = build_model_for_run(config, num_classes)
    if config.compile:
        model.compile()
    step = TrainStep(model, build_loss(config, num_classes), channels_last=config.channels_last).to(device).train()
    parameters = [p for p in step.parameters() if p.requires_grad]
    opt = config.optimizer
    optimizer = torch.optim.AdamW(parameters, lr=opt.lr, betas=opt.betas, eps=opt.eps, weight_decay=opt.weight_decay)
    micro, accumulation, steps = config.micro_batch, config.grad_accumulation, spec["steps"]
    autocast = dict(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    generator = torch.Generator(device="cpu").manual_seed(0)

    def epoch() -> float:
        order = torch.randperm(len(images), generator=generator).to(device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        for index in range(steps * accumulation):
            batch = order[index * micro:(index + 1) * micro]
            with torch.autocast(**autocast):
                loss, _ = step(images[batch], masks[batch])
            (loss / accumulation).backward()
            if (index + 1) % accumulation == 0:
                if config.grad_clip:
                    torch.nn.utils.clip_grad_norm_(parameters, config.grad_clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return steps * accumulation * micro / (time.perf_counter() - start)

    epoch()
    _peak(device, reset=True)
    rates = [epoch() for _ in range(spec["timed_epochs"])]
    return rates, None, _peak(device)


def case_main(spec_path: str, result_path: str) -> None:
    """The child process: DeepSpeed prints to stdout, so the result goes to a file."""
    spec = json.loads(Path(spec_path).read_text())
    try:
        result = run_case(spec)
    except Exception as exc:  # noqa: BLE001 - every failure is this case's result, in one line
        text = " ".join(str(exc).split())
        out_of_memory = "out of memory" in text.lower() or type(exc).__name__ == "OutOfMemoryError"
        result = {"error": "out of memory" if out_of_memory else f"{type(exc).__name__}: {text[:400]}"}
    Path(result_path).write_text(json.dumps(result))


# --------------------------------------------------------------------------- the whole benchmark

def make_stores(folder: Path, scale: Scale) -> dict[str, str]:
    """A synthetic lab-style dataset prepped into a CNN store (and a SAM store at its tile size)."""
    from steelseg_hpc.data import load_spec, make_synthetic_dataset, prepare

    stores = {"cnn": folder / f"cnn-{scale.tile}.zarr", "sam": folder / f"sam-{scale.sam_tile}.zarr"}
    if not all(path.exists() for path in stores.values()):
        spec = make_synthetic_dataset(folder / "raw", groups=scale.groups, size=scale.image_size, seed=0,
                                      tile_size=scale.tile, copies=1, force=True)
        prepare(load_spec(spec), stores["cnn"], workers=0)
        if scale.sam_tile == scale.tile:
            stores["sam"] = stores["cnn"]
        else:
            prepare(load_spec(spec, tile_size=scale.sam_tile, stride=scale.sam_tile // 2), stores["sam"], workers=0)
    return {name: str(path) for name, path in stores.items()}


def run_all(args, scale: Scale, work: Path) -> dict:
    started = time.monotonic()
    deadline = started + args.budget_s
    stores = make_stores(work, scale)
    setup_s = time.monotonic() - started
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if args.device == "cpu":
        # One thread per process: on a small shared CPU more threads only fight over the cores.
        env.update(DS_ACCELERATOR="cpu", CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"))
    results: dict[str, dict] = {}
    log = open(args.log, "a") if args.log else None
    for case in plan(scale, with_compile=args.compile):
        if args.only and case.name not in args.only:
            continue
        left = deadline - time.monotonic()
        if left < min(case.cap_s, 30):
            results[case.name] = {"skipped": f"the {args.budget_s:.0f} s budget was spent ({left:.0f} s left)"}
            continue
        spec = {"case": asdict(case), "stores": stores, "steps": scale.steps, "timed_epochs": scale.timed_epochs,
                "workers": scale.workers}
        spec_path, result_path = work / f"{case.name}.json", work / f"{case.name}.result.json"
        spec_path.write_text(json.dumps(spec))
        result_path.unlink(missing_ok=True)
        case_start = time.monotonic()
        try:
            done = subprocess.run([sys.executable, __file__, "--case", str(spec_path), str(result_path)],
                                  env=env, capture_output=True, text=True, timeout=min(case.cap_s, left))
            stderr, code = done.stderr, done.returncode
        except subprocess.TimeoutExpired as exc:
            stderr, code = (exc.stderr or b"").decode() if isinstance(exc.stderr, bytes) else (exc.stderr or ""), None
        if log is not None:
            log.write(f"===== {case.name} (exit {code})\n{stderr[-20000:]}\n")
            log.flush()
        if code is None:
            result = {"error": f"timed out after {min(case.cap_s, left):.0f} s"}
        elif result_path.exists():
            result = json.loads(result_path.read_text())
        else:
            lines = [line for line in stderr.splitlines() if line.strip()]
            result = {"error": f"exit {code}: {lines[-1][:400] if lines else 'no output'}"}
        result["wall_s"] = round(time.monotonic() - case_start, 1)
        result["note"] = case.note
        results[case.name] = result
        if not args.json:
            print(f"  {case.name}: {_case_line(result)}", file=sys.stderr, flush=True)
    if log is not None:
        log.close()
    return {"cases": results, "setup_s": round(setup_s, 1), "wall_s": round(time.monotonic() - started, 1)}


def _case_line(result: dict) -> str:
    if "tiles_per_s" not in result:
        return result.get("error") or result.get("skipped", "?")
    compile_s = f", compile {result['compile_s']:.0f} s" if result.get("compile_s") else ""
    return (f"{result['tiles_per_s']:.2f} tiles/s, step {result['step_s']:.3f} s, peak {result['peak_gib']:.1f} GiB"
            f"{compile_s} ({result['wall_s']:.0f} s)")


def _rate(cases: dict, name: str) -> float | None:
    return cases.get(name, {}).get("tiles_per_s")


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a / b


def targets(cases: dict, comparable: bool) -> list[dict]:
    """The issue's targets from the measured cases (None where a case failed or was skipped)."""
    b16 = {name: _rate(cases, name) for name in ("unet3plus-b16-accumulation", "unet3plus-b16-checkpointing",
                                                 "unet3plus-b16-compile")}
    measured = {name: rate for name, rate in b16.items() if rate is not None}
    best_b16 = max(measured, key=measured.get) if measured else None
    step = {name: cases.get(name, {}).get("step_s") for name in
            ("unet3plus-small-batch", "unet3plus-enhanced-small-batch", "unet3plus-enhanced-glu-small-batch")}
    rows = [
        ("unet3plus_800_b16_tiles_per_s", "paper-faithful vanilla U-Net3+, 800², batch 16: the fastest of "
         "accumulation, activation checkpointing and compile", measured.get(best_b16), ">=", 25,
         ANCHORS["unet3plus"], {"best": best_b16, "per_way": b16,
                                "peak_gib": {n: cases.get(n, {}).get("peak_gib") for n in b16}}),
        ("conv_then_resample_tiles_per_s", "U-Net3+ with skip_order = conv-then-resample, batch 16",
         _rate(cases, "unet3plus-conv-then-resample-b16"), ">=", 40, {},
         {"val_dice": "beside the paper order: launch/experiments/metaldam-skip-order.toml vs metaldam.toml"}),
        ("enhanced_glu_vs_enhanced_step", "Enhanced* step time / Enhanced step time",
         _ratio(step["unet3plus-enhanced-glu-small-batch"], step["unet3plus-enhanced-small-batch"]), "<=", 1.5,
         ANCHORS["enhanced_glu_vs_enhanced"], {}),
        ("enhanced_vs_vanilla_step", "Enhanced step time / vanilla step time",
         _ratio(step["unet3plus-enhanced-small-batch"], step["unet3plus-small-batch"]), "<=", 2.0,
         ANCHORS["enhanced_vs_vanilla"], {}),
        ("sam_lora_r512_1024_b1_it_per_s", "SAM_LoRA vit_b rank 512, 1024², batch 1: optimiser steps/s",
         _rate(cases, "sam-lora-b1"), ">=", 20, ANCHORS["sam"], {}),
        ("engine_vs_plain", "engine tiles/s / plain loop tiles/s (same model, loss and device tiles)",
         _ratio(_rate(cases, "unet3plus-b16-accumulation-device-data"),
                _rate(cases, "unet3plus-b16-accumulation-plain-loop")), ">=", 0.95, {}, {}),
        ("store_vs_device_tiles", "engine tiles/s from the Zarr store / from tiles already on the device",
         _ratio(_rate(cases, "unet3plus-b16-accumulation"), _rate(cases, "unet3plus-b16-accumulation-device-data")),
         ">=", 0.95, {}, {}),
    ]
    out = []
    for key, what, value, op, goal, anchors, extra in rows:
        met = None
        if comparable and value is not None:
            met = value >= goal if op == ">=" else value <= goal
        out.append({"target": key, "what": what, "value": value, "goal": f"{op} {goal}", "met": met,
                    "anchors": anchors, **extra})
    return out


def _versions() -> dict:
    import torch

    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("deepspeed", "zarr"):
        try:
            versions[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001 - a version we cannot read is left out
            pass
    return versions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (a smoke run of the same code path)")
    parser.add_argument("--budget-s", type=float, default=450.0, help="wall-clock budget for all cases")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="include the torch.compile case (default: on CUDA only)")
    parser.add_argument("--work", type=Path, default=None, help="folder for the stores (kept; default: a temp dir)")
    parser.add_argument("--log", default=None, help="append every case's stderr to this file")
    parser.add_argument("--only", nargs="+", metavar="CASE", help="run only these cases (names as in the JSON)")
    parser.add_argument("--case", nargs=2, metavar=("SPEC", "RESULT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.case:
        case_main(*args.case)
        return 0
    if args.device == "cpu":
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA device is visible; use --device cpu --tiny for a smoke run",
              file=sys.stderr)
        return 2
    if args.compile is None:
        # On a CPU inductor's C++ builds take minutes: the smoke run leaves compile out unless asked.
        args.compile = args.device == "cuda"
    scale = TINY if args.tiny else PAPER
    with tempfile.TemporaryDirectory(prefix="steelseg-gpu-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        measured = run_all(args, scale, work)
    cases = measured["cases"]
    if not args.compile and not args.only:
        cases["unet3plus-b16-compile"] = {"skipped": "compile left out (--compile to include it)"}
    device = next((c["device"] for c in cases.values() if "device" in c), args.device)
    result = {
        "device": device, "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "scale": scale.name, "comparable": scale is PAPER and args.device == "cuda",
        "targets": targets(cases, comparable=scale is PAPER and args.device == "cuda"),
        "cases": cases, "setup_s": measured["setup_s"], "wall_s": measured["wall_s"], "versions": _versions(),
        "settings": {k: v for k, v in asdict(scale).items()},
    }
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{device}, {scale.name} scale, {result['date']}; {result['wall_s']:.0f} s")
    for row in result["targets"]:
        value = "n/a" if row["value"] is None else f"{row['value']:.3g}"
        verdict = {True: "met", False: "NOT met", None: "-"}[row["met"]]
        anchors = "; ".join(f"{k}: {v}" for k, v in row["anchors"].items())
        print(f"{row['target']:34s} {value:>8s}  goal {row['goal']:8s} {verdict:8s} {anchors}")
    if not result["comparable"]:
        print("(tiny or CPU figures test the code path; they are not comparable with the targets)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

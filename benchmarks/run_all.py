"""Run every benchmark, one after the other, and collect their JSON into one file.

Usage:
    python benchmarks/run_all.py [--out benchmarks/results.json] [--only prep train ...]
    python benchmarks/run_all.py --table benchmarks/results.json   # the Markdown table, no run

``--only`` reruns some benchmarks and keeps the others' latest results in ``--out`` when they were
measured on the same machine (each entry carries its date).

Each benchmark runs as its own process with ``--json`` (they must not share a machine's cores
with each other: their ratios are measured side by side within one run). Without CUDA, ``gpu``
runs its CPU smoke test (``--device cpu --tiny``: the code path, no verdict on its targets). The output names the machine, the date and each benchmark's wall time; a
failing benchmark is recorded with its error and the others still run.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
#: name -> extra arguments (each script's defaults are sized for a 2-core CPU).
BENCHMARKS = {
    "prep": [], "store_codecs": [], "models": [], "sam_lora": [], "train": [], "precision": [],
    "checkpoints": [], "sweep": [], "multinode": [], "gpu": [], "cli": [],
}


@dataclass(frozen=True)
class Figure:
    """One headline figure of a benchmark's JSON, and the target it is held to (if any)."""

    label: str
    value: Callable[[dict], float | None]
    goal: str = ""
    met: Callable[[float], bool] | None = None


def _at(*keys: str) -> Callable[[dict], float | None]:
    def pick(result: dict) -> float | None:
        for key in keys:
            if not isinstance(result, dict) or key not in result:
                return None
            result = result[key]
        return result
    return pick


def _ratio(top: Callable[[dict], float | None], bottom: Callable[[dict], float | None]):
    def pick(result: dict) -> float | None:
        a, b = top(result), bottom(result)
        return None if a is None or not b else a / b
    return pick


def _step(arch: str) -> Callable[[dict], float | None]:
    return _at("archs", arch, "step_ratio")


#: The figures each benchmark's row shows, with the targets of the issues that asked for them.
#: ``gpu`` carries its own targets in its JSON (``targets``), so it is read from there.
FIGURES: dict[str, list[Figure]] = {
    "prep": [
        Figure("prep, 2 Dask workers / one-process PNG script", _at("prep_2_workers_vs_png_script"),
               ">= 2", lambda v: v >= 2),
        Figure("tile reads, Zarr / PNG", _at("zarr_vs_png_reads"), ">= 2", lambda v: v >= 2),
        Figure("prep, 2 Dask workers / 1 process", _at("dask_2_workers_vs_1_process"), ">= 1.8",
               lambda v: v >= 1.8),
        Figure("every Dask worker had the worker environment", _at("workers_had_environment"), "true",
               lambda v: v is True),
    ],
    "store_codecs": [  # the store keeps images raw and masks in zstd-1 (docs/data.md)
        Figure("masks: zstd-1 compression ratio", _at("masks", "zstd-1", "compression_ratio")),
        Figure("masks: zstd-1 / uncompressed one-tile read time", _ratio(_at("masks", "zstd-1", "read_ms_per_tile"),
                                                                          _at("masks", "none", "read_ms_per_tile"))),
        Figure("images: best compression ratio of any codec", lambda r: max(
            (c["compression_ratio"] for c in r.get("images", {}).values()), default=None)),
    ],
    "models": [
        Figure("Enhanced* / Enhanced step (U-Net3+)", _ratio(_step("unet3plus-enhanced-glu"),
                                                             _step("unet3plus-enhanced")),
               "<= 1.5", lambda v: v <= 1.5),
        Figure("Enhanced / vanilla step (U-Net3+)", _step("unet3plus-enhanced"), "<= 2", lambda v: v <= 2),
        Figure("conv-then-resample / paper order step", _step("unet3plus[conv-then-resample]")),
    ],
    "sam_lora": [
        Figure("rank 512 / rank 4 step (tiny SAM)", _at("ranks", "512", "step_ratio")),
        Figure("rank 0 (full) / rank 4 memory", _at("ranks", "0", "mem_ratio")),
    ],
    "train": [
        Figure("engine / plain PyTorch loop, tiles/s", _at("engine_vs_plain"), ">= 0.95", lambda v: v >= 0.95),
        Figure("ZeRO-2 / ZeRO-0 peak memory per rank", _at("zero2_vs_zero0_peak_mem")),
    ],
    "precision": [
        Figure("precision auto / the faster of fp32 and bf16", _at("auto_vs_best"), ">= 0.95",
               lambda v: v >= 0.95),
        Figure("bf16 / fp32 tiles/s", _at("bf16_vs_fp32")),
    ],
    "checkpoints": [
        Figure("SAM vit_b checkpoint, full / LoRA-only, rank 4", _at("full_vs_lora_only_r4")),
        Figure("SAM vit_b checkpoint, full / LoRA-only, rank 512", _at("full_vs_lora_only_r512")),
    ],
    "cli": [
        Figure("steelseg-hpc --help, median s", _at("median_s", "help"), "<= 0.5", lambda v: v <= 0.5),
        Figure("steelseg-hpc status --help, median s", _at("median_s", "status_help"), "<= 0.5", lambda v: v <= 0.5),
        Figure("steelseg-hpc status of 200 jobs, median s", _at("median_s", "status"), "<= 1", lambda v: v <= 1),
    ],
    "multinode": [
        Figure("2 nodes x 1 rank / 1 node x 2 ranks, tiles/s", _at("two_nodes_vs_one_node")),
        Figure("node crash -> node down, s", _at("crash", "detected_s")),
        Figure("node crash -> resumed job's first step, s", _at("crash", "first_step_s")),
        Figure("crashed run completed, epochs in order", lambda r: (r.get("crash", {}).get("completed") is True
                                                                   and r["crash"].get("epochs_in_order") is True),
               "true", lambda v: v is True),
    ],
    "sweep": [
        Figure("driver overhead per trial, median s", _at("driver_overhead_s", "median"), "< 2",
               lambda v: v < 2),
        Figure("driver overhead per trial, max s", _at("driver_overhead_s", "max"), "< 2", lambda v: v < 2),
        Figure("GPU-slot idle beyond an ideal scheduler", _at("extra_idle_vs_ideal"), "< 0.10",
               lambda v: v < 0.10),
    ],
}


def _shown(value) -> str:
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value).lower()
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _row(*cells: str) -> str:
    return "| " + " | ".join(cells) + " |"


def table(results: dict) -> str:
    """The Markdown table of one ``run_all`` results file: benchmark, figure, value, target, met.

    Example:
        >>> print(table({"machine": {"cpu": "X", "cores": 2, "date": "2026-12-02", "gpu": None},
        ...              "benchmarks": {"precision": {"result": {"auto_vs_best": 0.9, "bf16_vs_fp32": 1.5},
        ...                                           "seconds": 40.0}}}))
        Machine: X, 2 cores, no GPU; 2026-12-02.
        <BLANKLINE>
        | benchmark | figure | value | target | met |
        |---|---|---|---|---|
        | precision | precision auto / the faster of fp32 and bf16 | 0.9 | >= 0.95 | no |
        | precision | bf16 / fp32 tiles/s | 1.5 |  |  |
    """
    info = results.get("machine", {})
    lines = [f"Machine: {info.get('cpu', '?')}, {info.get('cores', '?')} cores, "
             f"{info.get('gpu') or 'no GPU'}; {info.get('date', '?')}.", "",
             "| benchmark | figure | value | target | met |", "|---|---|---|---|---|"]
    order = list(BENCHMARKS)
    shown = sorted(results.get("benchmarks", {}).items(),
                   key=lambda item: order.index(item[0]) if item[0] in order else len(order))
    for name, outcome in shown:
        if "error" in outcome:
            lines.append(_row(name, f"failed: {outcome['error'][:120]}", "", "", ""))
            continue
        result = outcome["result"]
        if name == "gpu":
            scale = f" ({result['scale']}, {result.get('device', '?')})" if result.get("scale") == "tiny" else ""
            for target in result.get("targets", []):
                met = target.get("met")
                lines.append(_row("gpu", target.get("target", "?") + scale, _shown(target.get("value")),
                                  str(target.get("goal", "")), "-" if met is None else ("yes" if met else "no")))
            continue
        for figure in FIGURES.get(name, []):
            value = figure.value(result)
            met = "" if figure.met is None else ("-" if value is None else ("yes" if figure.met(value) else "no"))
            lines.append(_row(name, figure.label, _shown(value), figure.goal, met))
    return "\n".join(lines)


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def cpu_name() -> str:
    """The CPU's model name and its native-bf16 flags (they decide what ``precision = auto`` picks)."""
    from steelseg_hpc.training.precision import cpu_bf16_flags

    try:
        cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return platform.processor() or platform.machine()
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")]
    flags = cpu_bf16_flags(cpuinfo)
    return f"{names[0] if names else platform.machine()} ({', '.join(flags) if flags else 'no native bf16'})"


def machine() -> dict:
    import torch

    return {"cpu": cpu_name(), "cores": os.cpu_count(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "date": time.strftime("%Y-%m-%d"), "python": platform.python_version(), "torch": torch.__version__}


def run_one(name: str, extra: list[str]) -> dict:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, str(HERE / f"{name}.py"), "--json", *extra], capture_output=True,
                          text=True, env=dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1"))
    seconds = round(time.perf_counter() - started, 1)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return {"error": " | ".join(tail), "seconds": seconds}
    return {"result": json.loads(lines[-1]), "seconds": seconds}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=HERE / "results.json")
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), help="only these benchmarks")
    parser.add_argument("--table", type=Path, metavar="RESULTS",
                        help="print the Markdown table of a results file and run nothing")
    args = parser.parse_args(argv)
    if args.table is not None:
        try:
            recorded = json.loads(args.table.read_text(encoding="utf-8"))
            problem = None if isinstance(recorded, dict) and isinstance(recorded.get("benchmarks"), dict) \
                else "no 'benchmarks' object"
        except (OSError, ValueError) as exc:
            problem = exc.strerror if isinstance(exc, OSError) else "not JSON"
        if problem:
            parser.exit(2, f"error: {args.table}: expected a results file written by run_all.py ({problem})\n")
        print(table(recorded))
        return {}
    names = args.only or list(BENCHMARKS)
    results = {"machine": machine(), "benchmarks": {}}
    if args.only and args.out.exists():
        # rerunning some benchmarks keeps the others' latest results, if they came from this machine
        earlier = json.loads(args.out.read_text(encoding="utf-8"))
        same = {k: v for k, v in earlier.get("machine", {}).items() if k != "date"} == \
            {k: v for k, v in results["machine"].items() if k != "date"}
        if same:
            results["benchmarks"] = earlier.get("benchmarks", {})
    for name in names:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        extra = BENCHMARKS[name]
        if name == "gpu" and not _cuda():
            extra = [*extra, "--device", "cpu", "--tiny"]  # the code path only: its targets get no verdict
        results["benchmarks"][name] = dict(run_one(name, extra), date=results["machine"]["date"])
        print(f"  {name}: {results['benchmarks'][name].get('seconds')} s"
              f"{' FAILED: ' + results['benchmarks'][name]['error'] if 'error' in results['benchmarks'][name] else ''}",
              file=sys.stderr, flush=True)
    from steelseg_hpc.core.io import atomic_write_json

    atomic_write_json(args.out, results)  # a half-run never leaves a truncated results file
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main(sys.argv[1:])

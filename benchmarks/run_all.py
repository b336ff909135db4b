"""Run every benchmark, one after the other, and collect their JSON into one file.

Usage:
    python benchmarks/run_all.py [--out benchmarks/results.json] [--only prep train ...]

Each benchmark runs as its own process with ``--json`` (they must not share a machine's cores
with each other: their ratios are measured side by side within one run). ``gpu`` runs only where
CUDA is available. The output names the machine, the date and each benchmark's wall time; a
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
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: name -> extra arguments (each script's defaults are sized for a 2-core CPU).
BENCHMARKS = {
    "prep": [], "store_codecs": [], "models": [], "sam_lora": [], "train": [], "precision": [],
    "checkpoints": [], "sweep": [], "gpu": [],
}


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def machine() -> dict:
    import torch

    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
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
    args = parser.parse_args(argv)
    names = args.only or [name for name in BENCHMARKS if name != "gpu" or _cuda()]
    results = {"machine": machine(), "benchmarks": {}}
    for name in names:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        results["benchmarks"][name] = run_one(name, BENCHMARKS[name])
        print(f"  {name}: {results['benchmarks'][name].get('seconds')} s"
              f"{' FAILED: ' + results['benchmarks'][name]['error'] if 'error' in results['benchmarks'][name] else ''}",
              file=sys.stderr, flush=True)
    from steelseg_hpc.core.io import atomic_write_json

    atomic_write_json(args.out, results)  # a half-run never leaves a truncated results file
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main(sys.argv[1:])

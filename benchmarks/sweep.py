"""Sweep driver overhead and GPU-slot idle time, on the local SLURM (or the local executor).

Usage:
    python benchmarks/sweep.py [--json] [--trials 6] [--parallel 2] [--profile local-cluster]

A sweep of short trials (a tiny U-Net, one epoch each, on a small synthetic store) runs through
the real driver and launcher. Measured in this one run:

- ``driver_overhead_s``: per trial that waited for a free slot, the seconds from the job that
  freed the slot finishing (its ``final.json`` written) to the next job being submitted
  (median and max; target < 2 s on the local SLURM);
- ``slot_idle_fraction``: 1 - (seconds jobs ran) / (slots x makespan), jobs' start and end from
  sacct (the local executor: submission and ``final.json``); ``ideal_slot_idle_fraction``: the
  same for the same job durations packed by an ideal scheduler (no overhead, greedy);
  ``extra_idle_vs_ideal`` is their difference (target < 0.10).

Trials that did not complete are listed in ``failed_trials`` with the driver's reason, measured
around rather than hidden, and the scratch folder with their jobs' logs is kept (``kept``).
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import heapq
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

REPO = Path(__file__).resolve().parents[1]


def _sacct_span(job_id: str) -> tuple[float, float] | None:
    out = subprocess.run(["sacct", "-X", "-P", "-n", "-j", job_id, "-o", "Start,End"], capture_output=True,
                         text=True, check=False).stdout.split()
    if not out or "Unknown" in out[0]:
        return None
    start, end = (dt.datetime.fromisoformat(part).timestamp() for part in out[0].split("|"))
    return start, end


def ideal_makespan(durations: list[float], slots: int) -> float:
    """Greedy list scheduling in the given order: each job starts on the first free slot."""
    free = [0.0] * slots
    for duration in durations:
        heapq.heappush(free, heapq.heappop(free) + duration)
    return max(free)


@contextlib.contextmanager
def _scratch():
    """A scratch folder, kept when a trial failed or the run crashed (its jobs' logs are in it)."""
    root = Path(tempfile.mkdtemp(prefix="steelseg-sweep-bench-"))
    keep: list = []
    try:
        yield root, keep
    except BaseException:
        keep.append("crashed")
        raise
    finally:
        if keep:
            print(f"kept {root} for its logs", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)


def run(args) -> dict:
    from steelseg_hpc.data import load_spec, make_synthetic_dataset, prepare
    from steelseg_hpc.launch import ExperimentIndex
    from steelseg_hpc.sweeps import SweepDriver

    with _scratch() as (root, keep):
        spec = make_synthetic_dataset(root / "raw", groups=(3, 3, 3), size=(128, 112), seed=0, tile_size=64)
        prepare(load_spec(spec), root / "store.zarr", workers=0)
        lrs = ", ".join(f"{0.002 * (i + 1):.4f}" for i in range(args.trials))
        sweep = root / "bench.toml"
        sweep.write_text("\n".join([
            'name = "bench"', f'store = "{root / "store.zarr"}"', f'runs_root = "{root}"',
            f"parallel = {args.parallel}", "[base]", 'arch = "unet3plus"',
            'overrides = ["epochs=1", "model.base_channels=4", "data.num_workers=0", "data.max_train_tiles=8", '
            '"micro_batch=2", "grad_accumulation=2", "progress=false", "precision=\\"fp32\\""]',
            "[pruner]", 'kind = "none"', "[space.lr]", 'key = "optimizer.lr"', f"values = [{lrs}]", ""]))
        driver = SweepDriver.from_files(sweep, profile=args.profile, index=ExperimentIndex(root / "index.sqlite"),
                                        poll_seconds=args.poll, echo=lambda line: None)
        driver.run()
        events = sorted(driver.events, key=lambda e: e["submitted"])
        finished, failed = {}, []
        for trial in driver.study.get_trials():
            final = Path(trial.user_attrs["run_dir"]) / "final.json"
            if trial.state.name != "COMPLETE" or not final.exists():
                # a failed trial is the driver's result too: reported, never a crash of the benchmark
                failed.append({"trial": trial.number, "state": trial.state.name,
                               "reason": trial.user_attrs.get("fail_reason", "")})
            if final.exists():
                finished[trial.user_attrs["job_id"]] = final.stat().st_mtime
        keep.extend(failed)
        slurm = driver.profile.executor == "slurm"
        spans = {}
        events = [event for event in events if event["job"] in finished]
        for event in events:
            span = _sacct_span(event["job"]) if slurm else None
            spans[event["job"]] = span or (event["submitted"], finished[event["job"]])
    # a trial beyond the first `parallel` waited for a slot: the one whose job finished last before it
    overheads = []
    for event in events[args.parallel:]:
        ended_before = [t for job, t in finished.items() if t <= event["submitted"]]
        if ended_before:
            overheads.append(event["submitted"] - max(ended_before))
    first = min(start for start, _ in spans.values())
    last = max(end for _, end in spans.values())
    busy = sum(end - start for start, end in spans.values())
    durations = [spans[e["job"]][1] - spans[e["job"]][0] for e in events]
    idle = 1 - busy / (args.parallel * (last - first))
    ideal = 1 - busy / (args.parallel * ideal_makespan(durations, args.parallel))
    return {
        "driver_overhead_s": {"median": round(statistics.median(overheads), 3) if overheads else None,
                              "max": round(max(overheads), 3) if overheads else None, "n": len(overheads)},
        "slot_idle_fraction": round(idle, 3), "ideal_slot_idle_fraction": round(ideal, 3),
        "extra_idle_vs_ideal": round(idle - ideal, 3),
        "trials": args.trials, "failed_trials": failed, "kept": str(root) if failed else None, "parallel": args.parallel, "executor": "slurm" if slurm else "local",
        "mean_job_seconds": round(statistics.fmean(durations), 2), "poll_seconds": args.poll,
        "timing_source": "sacct Start/End (1 s resolution)" if slurm else "submission to final.json",
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--profile", default=str(REPO / "launch" / "local-cluster.toml"))
    parser.add_argument("--poll", type=float, default=0.5, help="driver poll interval (s)")
    args = parser.parse_args(argv)
    result = run(args)
    if args.json:
        print(json.dumps(result))
    else:
        overhead = result["driver_overhead_s"]
        print(f"driver overhead per trial: median {overhead['median']} s, max {overhead['max']} s "
              f"(n={overhead['n']}; target < 2 s)")
        print(f"slot idle {result['slot_idle_fraction']:.1%} vs ideal {result['ideal_slot_idle_fraction']:.1%}: "
              f"{result['extra_idle_vs_ideal']:.1%} extra (target < 10 %)")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])

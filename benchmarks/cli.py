"""How fast the command line starts: ``--help``, ``status --help`` and ``status`` of 200 jobs.

Usage:
    python benchmarks/cli.py [--json] [--jobs 200] [--rounds 5]

Each case is a whole process, ``python -m steelseg_hpc ...`` as a user's shell starts it, timed
from start to exit; the cases take turns, round after round, and each keeps its median. ``status``
reads a temporary experiment index (``ExperimentIndex``, as ``launch`` writes it) of ``--jobs``
local-executor jobs that ended, each with a run directory of two epochs and a ``final.json``, so
it joins every job with its run directory as on a real login node. ``python -c pass`` is measured
beside them: the interpreter's own start, which no change of the package can remove.

Targets (issue 18): ``--help`` and ``status --help`` <= 0.5 s, ``status`` of 200 jobs <= 1 s.
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from steelseg_hpc.core import rundir  # noqa: E402
from steelseg_hpc.launch import ExperimentIndex, JobRow  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

#: case -> (arguments after ``python``, target seconds or None).
CASES = {
    "python": (["-c", "pass"], None),
    "help": (["-m", "steelseg_hpc", "--help"], 0.5),
    "status_help": (["-m", "steelseg_hpc", "status", "--help"], 0.5),
    "status": (["-m", "steelseg_hpc", "status"], 1.0),
}


def build_index(folder: Path, jobs: int) -> Path:
    """An index of one experiment with ``jobs`` ended local jobs, each with its run directory."""
    index = ExperimentIndex(folder / "index.sqlite")
    index.record_experiment("bench", folder / "runs", None, None, "local")
    for number in range(jobs):
        run = rundir.RunFiles(folder / "runs" / f"unet3plus-seed{number}")
        run.path.mkdir(parents=True)
        rows = [rundir.MetricsRow(epoch=epoch, step=10 * epoch, train_loss=0.5, val_dice=0.4 + 0.01 * epoch,
                                  val_pixel_accuracy=0.9, epoch_seconds=12.0, peak_memory_mb=900.0)
                for epoch in (1, 2)]
        rundir.write_metrics(run, rows)
        rundir.write_final(run, rundir.FinalSummary(run_dir=str(run.path), stopped=rundir.STOPPED_COMPLETED,
                                                    epochs_completed=2, epochs_planned=2, best_epoch=2,
                                                    best_val_dice=0.42))
        logs = folder / "logs"
        logs.mkdir(exist_ok=True)
        job_id = str(4_000_000 + number)  # a local job's id is its pid: these are long gone
        with open(logs / f"{job_id}_0_result.pkl", "wb") as handle:
            pickle.dump(("success", None), handle)
        index.record_job(JobRow(job_id, "bench", "unet3plus", number, str(run.path), "local",
                                str(logs / f"{job_id}_0_log.out"), str(logs / f"{job_id}_0_log.err"), 2))
    return index.path


def time_process(args: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *args], env=env, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"python {' '.join(args)} exited {done.returncode}: {done.stderr.strip()[-500:]}")
    return seconds


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--jobs", type=int, default=200, help="jobs in the index that status reads")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    load_before = os.getloadavg()[0]
    seconds: dict[str, list[float]] = {name: [] for name in CASES}
    with tempfile.TemporaryDirectory(prefix="steelseg-cli-") as tmp:
        env = {**os.environ, "STEELSEG_INDEX": str(build_index(Path(tmp), args.jobs)),
               "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        for _ in range(args.rounds):
            for name, (case_args, _target) in CASES.items():
                seconds[name].append(time_process(case_args, env))
    result: dict = {"jobs": args.jobs, "rounds": args.rounds,
                    "median_s": {name: round(statistics.median(times), 3) for name, times in seconds.items()},
                    "max_s": {name: round(max(times), 3) for name, times in seconds.items()}}
    result["targets"] = [{"target": f"{name}_median_s", "value": result["median_s"][name], "goal": f"<= {target}",
                          "met": result["median_s"][name] <= target}
                         for name, (_args, target) in CASES.items() if target is not None]
    result["load_average"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    if args.json:
        print(json.dumps(result))
    else:
        for name, (case_args, target) in CASES.items():
            goal = f"  (target <= {target} s)" if target is not None else ""
            print(f"python {' '.join(case_args):36s} median {result['median_s'][name]:.3f} s, "
                  f"max {result['max_s'][name]:.3f} s{goal}")
        print("load average (1 min) before/after:", result["load_average"])
    return result


if __name__ == "__main__":
    main(sys.argv[1:])

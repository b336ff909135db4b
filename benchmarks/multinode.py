"""Two nodes vs one: training speed across the local multi-node SLURM, and recovery from a node crash.

Usage (as root, on a machine where ``launch/local-cluster/up`` works):
    python benchmarks/multinode.py [--json] [--rounds 2] [--epochs 3]

The local cluster is reshaped to 3 nodes (``up --nodes 3``) and back to the shape it had. On a
small synthetic store, the smoke experiment's U-Net3+ trains through ``launch``'s own API:

- ``two_nodes`` (2 nodes x 1 rank) and ``one_node`` (1 node x 2 ranks) take turns, ``--rounds``
  rounds each, and each keeps its best round: training tiles/s and optimiser-step seconds over
  the epochs after the first (so DeepSpeed's start-up is left out), and ``two_nodes_vs_one_node``
  (tiles/s ratio). Both are gloo over this machine's memory (veth pairs between the nodes'
  network namespaces), so the ratio shows the suite's own multi-node overhead, not a network's.
- ``crash``: a 2-node run whose second node is crashed (``crash-node``: every process of it
  killed at once) after its first epoch's checkpoint. ``detected_s``: until SLURM marks the node
  down; ``requeued_start_s``: until the requeued job starts on two other nodes;
  ``first_step_s``: until the resumed job's first training forward (recorded by a
  sitecustomize hook in the job); and whether the run then completed with its epochs in order.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "launch" / "local-cluster"
SLURM_HOME = Path(os.environ.get("STEELSEG_SLURM_HOME", "/var/tmp/steelseg-slurm"))

# Written into the crash run's jobs (they inherit PYTHONPATH): the first training forward of a
# requeued attempt appends its wall time.
FIRST_STEP_HOOK = """
import os
if os.environ.get("STEELSEG_BENCH_FIRST_STEP") and int(os.environ.get("SLURM_RESTART_COUNT", "0")) > 0:
    import time
    from steelseg_hpc.training import engine

    original = engine.TrainStep.fp32_loss
    seen = {"done": False}

    def timed(self, logits, masks):
        if self.training and not seen["done"] and os.environ.get("SLURM_PROCID", "0") == "0":
            seen["done"] = True
            with open(os.environ["STEELSEG_BENCH_FIRST_STEP"], "a") as out:
                out.write(f"{time.time()}\\n")
        return original(self, logits, masks)

    engine.TrainStep.fp32_loss = timed
"""


def _sh(*command: str) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed: {(done.stderr or done.stdout).strip()}")
    return done.stdout


@contextlib.contextmanager
def three_nodes():
    """The local cluster with 3 nodes for the block; its earlier shape afterwards."""
    nodes_file = SLURM_HOME / "nodes"
    before = nodes_file.read_text().strip() if nodes_file.exists() else "1"
    _sh("bash", str(SCRIPTS / "up"), "--nodes", "3")
    try:
        yield
    finally:
        _sh("bash", str(SCRIPTS / "up"), "--nodes", before)


def _profile(**changes):
    from steelseg_hpc.compute.profiles import load_profile

    return load_profile(REPO / "launch" / "local-cluster.toml").model_copy(update=changes)


TWO_NODES = {"nodes": 2, "tasks_per_node": 1, "gpus_per_node": 1}
ONE_NODE = {"nodes": 1, "tasks_per_node": 2, "gpus_per_node": 2}


def _train(store: Path, root: Path, name: str, shape: dict, epochs: int, on_running=None) -> dict:
    """Launch one U-Net3+ run with ``shape``, wait for it; its status row and metrics rows."""
    from steelseg_hpc.core import rundir
    from steelseg_hpc.launch import ExperimentIndex, submit_experiment
    from steelseg_hpc.launch.config import load_experiment
    from steelseg_hpc.launch.handle import JobHandle

    experiment = load_experiment(REPO / "launch" / "experiments" / "smoke.toml", [
        f"name={name}", f"store={store}", f"runs_root={root}", "architectures=['unet3plus']", "seeds=[0]"])
    experiment = experiment.model_copy(update={"overrides": [*experiment.overrides, f"epochs={epochs}"]})
    index = ExperimentIndex(root / "index.sqlite")
    (row,) = submit_experiment(experiment, _profile(**shape), index)
    handle = JobHandle(row, index)
    if on_running is not None:
        on_running(row)
    status = handle.wait(poll_s=0.5, timeout_s=900)
    return {"status": status, "rows": rundir.read_metrics(row.run_dir), "job_id": row.job_id}


def _speed(rows) -> dict:
    """Training tiles/s and step seconds over the epochs after the first."""
    steps = [row.step - before for row, before in zip(rows, [0] + [r.step for r in rows])]
    later = list(zip(rows, steps))[1:] or list(zip(rows, steps))
    seconds = sum(row.train_seconds for row, _ in later)
    return {"tiles_per_s": sum(row.global_batch * n for row, n in later) / seconds,
            "step_s": seconds / sum(n for _, n in later), "epochs": len(rows)}


def _node_state(node: str) -> str:
    return _sh("sinfo", "-h", "-n", node, "-o", "%t").strip()


def crash_and_resume(store: Path, root: Path, epochs: int) -> dict:
    """A 2-node run whose second node is crashed after epoch 1; the recovery's timings."""
    hook = root / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(FIRST_STEP_HOOK)
    first_step_file = root / "first-step"
    saved = dict(os.environ)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")]))
    os.environ["STEELSEG_BENCH_FIRST_STEP"] = str(first_step_file)
    times: dict[str, float] = {}

    def crash_after_first_epoch(row) -> None:
        from steelseg_hpc.core import rundir

        deadline = time.monotonic() + 600
        while not rundir.read_metrics(row.run_dir) and time.monotonic() < deadline:
            time.sleep(0.2)
        times["crash"] = time.time()
        _sh("bash", str(SCRIPTS / "crash-node"), "n2")
        while not _node_state("n2").startswith("down") and time.monotonic() < deadline:
            time.sleep(0.2)
        times["detected"] = time.time()
        while len(_attempts(row.job_id)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        times["requeued_start"] = time.time()

    try:
        outcome = _train(store, root / "crash", "crash", TWO_NODES, epochs, on_running=crash_after_first_epoch)
    finally:
        os.environ.clear()
        os.environ.update(saved)
        _sh("bash", str(SCRIPTS / "up"), "--nodes", "3")
    first = [float(line) for line in first_step_file.read_text().split()] if first_step_file.exists() else []
    crash = times["crash"]
    return {
        "detected_s": round(times["detected"] - crash, 1),
        "requeued_start_s": round(times["requeued_start"] - crash, 1),
        "first_step_s": round(first[0] - crash, 1) if first else None,
        "attempts": _attempts(outcome["job_id"]),
        "completed": outcome["status"].state == "COMPLETED",
        "epochs_in_order": [row.epoch for row in outcome["rows"]] == list(range(1, epochs + 1)),
    }


def _attempts(job_id: str) -> list[str]:
    """Every attempt of the job (sacct -D): state and nodes, the running one included."""
    out = _sh("sacct", "-X", "-D", "-P", "-n", "-j", job_id, "-o", "State,NodeList")
    return [line for line in out.splitlines() if line and not line.startswith("PENDING")]


def run(args) -> dict:
    from steelseg_hpc.data import load_spec, make_synthetic_dataset, prepare

    root = Path(tempfile.mkdtemp(prefix="steelseg-multinode-bench-"))
    try:
        spec = make_synthetic_dataset(root / "raw", groups=(3, 3, 3), size=(256, 224), seed=0, tile_size=64)
        prepare(load_spec(spec), root / "store.zarr", workers=0)
        store = root / "store.zarr"
        with three_nodes():
            best: dict[str, dict] = {}
            for round_number in range(args.rounds):
                for name, shape in (("two_nodes", TWO_NODES), ("one_node", ONE_NODE)):
                    outcome = _train(store, root / f"{name}-{round_number}", name, shape, args.epochs)
                    if outcome["status"].state != "COMPLETED":
                        raise SystemExit(f"{name} run ended {outcome['status'].state}: {outcome['status'].reason}")
                    speed = _speed(outcome["rows"])
                    speed["nodes"] = outcome["status"].node
                    if name not in best or speed["tiles_per_s"] > best[name]["tiles_per_s"]:
                        best[name] = speed
            crash = crash_and_resume(store, root, args.epochs + 1)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {
        "two_nodes": best["two_nodes"],
        "one_node": best["one_node"],
        "two_nodes_vs_one_node": best["two_nodes"]["tiles_per_s"] / best["one_node"]["tiles_per_s"],
        "crash": crash,
        "rounds": args.rounds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--rounds", type=int, default=2, help="turns each shape takes (the best is kept)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of each speed run")
    args = parser.parse_args()
    if os.geteuid() != 0 or shutil.which("sinfo") is None:
        raise SystemExit("benchmarks/multinode.py needs root and the local SLURM (bash launch/local-cluster/up)")
    result = run(args)
    if args.json:
        print(json.dumps(result))
        return
    for name in ("two_nodes", "one_node"):
        r = result[name]
        print(f"{name:9s} on {r['nodes']}: {r['tiles_per_s']:.1f} tiles/s, {r['step_s'] * 1000:.0f} ms/step")
    print(f"two nodes / one node, tiles/s: {result['two_nodes_vs_one_node']:.2f}")
    c = result["crash"]
    print(f"node crash: down after {c['detected_s']} s, requeued job started after {c['requeued_start_s']} s, "
          f"first step after {c['first_step_s']} s; completed {c['completed']}, epochs in order {c['epochs_in_order']}")


if __name__ == "__main__":
    sys.exit(main())

"""benchmarks/README.md's table comes from benchmarks/results.json: its figures must still exist."""
from __future__ import annotations

import doctest
import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run_all():
    spec = importlib.util.spec_from_file_location("run_all", REPO / "benchmarks" / "run_all.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["run_all"] = module  # dataclasses look their module up while the class is built
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("run_all", None)


def test_the_table_examples_hold(run_all):
    assert doctest.testmod(run_all).failed == 0


def test_every_benchmark_with_figures_is_one_that_runs(run_all):
    assert set(run_all.FIGURES) <= set(run_all.BENCHMARKS)
    for name in run_all.BENCHMARKS:
        assert (REPO / "benchmarks" / f"{name}.py").is_file(), name


def test_every_figure_is_found_in_the_recorded_results(run_all):
    """A benchmark that renames a JSON key would leave a '-' in the README's table."""
    results = json.loads((REPO / "benchmarks" / "results.json").read_text(encoding="utf-8"))
    for name, figures in run_all.FIGURES.items():
        outcome = results["benchmarks"].get(name)
        assert outcome is not None and "result" in outcome, f"{name} missing or failed in results.json"
        for figure in figures:
            assert figure.value(outcome["result"]) is not None, f"{name}: {figure.label}"


def test_a_missed_target_says_no_and_a_failed_benchmark_says_why(run_all):
    results = {"machine": {"cpu": "X", "cores": 2, "date": "d", "gpu": "H200"},
               "benchmarks": {"sweep": {"result": {"driver_overhead_s": {"median": 2.5, "max": 1.0},
                                                   "extra_idle_vs_ideal": 0.2}},
                              "train": {"error": "CUDA out of memory", "seconds": 3.0},
                              "gpu": {"result": {"targets": [
                                  {"target": "engine_vs_plain", "value": 0.97, "goal": ">= 0.95", "met": True},
                                  {"target": "store_vs_device_tiles", "value": 1.2, "goal": ">= 0.95",
                                   "met": None}]}}}}
    lines = run_all.table(results).splitlines()
    assert lines[0] == "Machine: X, 2 cores, H200; d."
    assert "| sweep | driver overhead per trial, median s | 2.5 | < 2 | no |" in lines
    assert "| sweep | driver overhead per trial, max s | 1 | < 2 | yes |" in lines
    assert "| sweep | GPU-slot idle beyond an ideal scheduler | 0.2 | < 0.10 | no |" in lines
    assert any(line.startswith("| train | failed: CUDA out of memory") for line in lines)
    assert "| gpu | engine_vs_plain | 0.97 | >= 0.95 | yes |" in lines
    assert "| gpu | store_vs_device_tiles | 1.2 | >= 0.95 | - |" in lines  # tiny sizes: no verdict


def test_the_readme_shows_the_recorded_results(run_all):
    """After a rerun, paste `run_all.py --table benchmarks/results.json` into benchmarks/README.md."""
    results = json.loads((REPO / "benchmarks" / "results.json").read_text(encoding="utf-8"))
    assert run_all.table(results) in (REPO / "benchmarks" / "README.md").read_text(encoding="utf-8")

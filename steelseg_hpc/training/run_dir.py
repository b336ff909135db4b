"""The run directory: resolved config, run metadata, ``metrics.jsonl``, ``train.log``, ``final.json``.

Only rank 0 writes here (except DeepSpeed's per-rank checkpoint files). Rerunning a run in the same
directory checks that the configuration still matches the saved one, so a resume cannot silently
change the model or the optimisation.

Example:
    >>> run = RunDir(Path("runs/unet"))  # doctest: +SKIP
    >>> run.append_metrics({"epoch": 1, "train_loss": 0.9})  # doctest: +SKIP
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from steelseg_hpc.errors import ConfigError
from steelseg_hpc.io import atomic_write_json, atomic_write_text
from steelseg_hpc.training.config import RunConfig, config_differences, load_saved_config
from steelseg_hpc.training.run_info import git_commit, host_info, package_versions


class RunDir:
    """Paths and rank-0 bookkeeping of one run directory."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.config_file = self.path / "config.toml"
        self.metrics_file = self.path / "metrics.jsonl"
        self.run_file = self.path / "run.json"
        self.log_file = self.path / "train.log"
        self.final_file = self.path / "final.json"
        self.checkpoints = self.path / "checkpoints"

    def check_config(self, config: RunConfig) -> bool:
        """Whether this is a resume; raises if the saved config differs in a non-resumable key."""
        if not self.config_file.exists():
            return False
        differences = config_differences(load_saved_config(self.config_file), config)
        if differences:
            raise ConfigError(
                f"{self.path}: the run config differs from the saved config.toml "
                f"({'; '.join(differences[:5])}); use a new --run-dir or the same settings to resume"
            )
        return True

    def initialise(self, config: RunConfig, world_size: int) -> None:
        """Write config.toml (first start) and add this start to run.json."""
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.config_file, config.to_toml())
        info = self.read_json(self.run_file) or {"created": time.strftime("%Y-%m-%dT%H:%M:%S"), "starts": []}
        info.update(git=git_commit(), versions=package_versions())
        info["starts"].append({"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "host": host_info(world_size)})
        atomic_write_json(self.run_file, info)

    @staticmethod
    def read_json(path: Path) -> dict | None:
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def read_metrics(self) -> list[dict]:
        if not self.metrics_file.exists():
            return []
        rows = []
        for line in self.metrics_file.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:  # a line cut short by a crash
                continue
        return rows

    def truncate_metrics(self, last_epoch: int) -> None:
        """Drop lines of epochs after ``last_epoch`` (written after the checkpoint resumed from)."""
        rows = [row for row in self.read_metrics() if row.get("epoch", 0) <= last_epoch]
        atomic_write_text(self.metrics_file, "".join(json.dumps(row) + "\n" for row in rows))

    def append_metrics(self, row: dict) -> None:
        with self.metrics_file.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
            handle.flush()

    def attach_log(self) -> logging.Handler:
        """Send the package's log records to ``train.log`` until the handler is removed."""
        handler = logging.FileHandler(self.log_file, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.setLevel(logging.INFO)
        package_logger = logging.getLogger("steelseg_hpc")
        package_logger.addHandler(handler)
        if package_logger.getEffectiveLevel() > logging.INFO:
            package_logger.setLevel(logging.INFO)
        return handler

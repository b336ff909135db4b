"""The sweep driver as a job of its own (``sweep NAME --detach``).

Example:
    >>> job = DriverJob("sweeps/lora-rank.toml", {"profile": "local"})  # doctest: +SKIP
"""
from __future__ import annotations

import submitit

from steelseg_hpc.sweeps.driver import SweepDriver


class DriverJob(submitit.helpers.Checkpointable):
    """The driver itself as a small CPU job (``sweep --detach``).

    On its time limit submitit requeues it (it is checkpointable, with nothing to save): the
    requeued driver re-attaches to the study like a rerun of the command does.

    Args:
        sweep_file: The sweep TOML.
        options: :meth:`SweepDriver.from_files` keyword arguments (profile, overrides, ...).
    """

    def __init__(self, sweep_file: str, options: dict):
        self.sweep_file, self.options = sweep_file, options

    def __call__(self) -> dict:
        driver = SweepDriver.from_files(self.sweep_file, echo=lambda line: print(line, flush=True), **self.options)
        return driver.run()

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission:
        # The first start queued the failed points' retries: a requeued driver must not queue more.
        return submitit.helpers.DelayedSubmission(DriverJob(self.sweep_file, {**self.options, "retry_failed": False}))

"""A rich progress bar for the training loop, shown on rank 0 only, with it/s like the lab's log.

Example:
    >>> with EpochProgress(enabled=False) as bar:
    ...     bar.start_epoch(1, total=3)
    ...     bar.advance(loss=0.5)
"""
from __future__ import annotations

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.text import Text


class RateColumn(ProgressColumn):
    """Iterations per second (optimiser steps), as ``12.3 it/s``."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("  -.-- it/s" if speed is None else f"{speed:6.2f} it/s", style="cyan")


class EpochProgress:
    """One bar per epoch; ``advance`` once per optimiser step with the running loss."""

    def __init__(self, enabled: bool = True, console: Console | None = None):
        self.enabled = enabled
        self._progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
            RateColumn(), TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(),
            TimeRemainingColumn(), console=console or Console(stderr=True), transient=False,
            disable=not enabled,
        )
        self._task = None

    def __enter__(self) -> "EpochProgress":
        self._progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.__exit__(*exc)

    def start_epoch(self, epoch: int, total: int, completed: int = 0) -> None:
        """A new bar; ``completed`` steps are already done (an epoch resumed part-way)."""
        if self._task is not None:
            self._progress.stop_task(self._task)
        self._task = self._progress.add_task("train", total=total, completed=completed, epoch=epoch,
                                             loss="-")

    def advance(self, loss: float | None = None) -> None:
        fields = {} if loss is None else {"loss": f"{loss:.4f}"}
        self._progress.update(self._task, advance=1, **fields)

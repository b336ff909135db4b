"""What a training run shows its user: a progress bar per epoch, one summary line per epoch.

On a terminal, rank 0 draws a rich bar per epoch (steps done of the epoch's steps, the running
loss, tiles/s, elapsed and remaining time). When stdout is not a terminal (a SLURM job's log, a
pipe), there is no bar: one line per epoch, so a log shows progress without control characters.
The summary line closes every epoch in both cases.

Example:
    >>> with EpochProgress(enabled=False) as bar:
    ...     bar.start_epoch(1, epochs=3, total=3)
    ...     bar.advance(loss=0.5, tiles=8)
    ...     bar.end_epoch("epoch 1/3: loss 0.5000")
"""
from __future__ import annotations

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.text import Text


class TilesPerSecondColumn(ProgressColumn):
    """Training throughput in tiles per second (the lab's unit), from the task's tile count."""

    def render(self, task: Task) -> Text:
        seconds = task.elapsed or 0.0
        tiles = task.fields.get("tiles", 0)
        rate = tiles / seconds if seconds > 0 and tiles else None
        return Text("  -.- tiles/s" if rate is None else f"{rate:6.1f} tiles/s", style="cyan")


class EpochProgress:
    """One bar per epoch on a terminal; ``advance`` once per optimiser step.

    Args:
        enabled: Show anything at all (rank 0 only, and ``progress = true`` in the run config).
        console: Where to draw (default: stderr).
    """

    def __init__(self, enabled: bool = True, console: Console | None = None):
        self.console = console or Console(stderr=True)
        self.enabled = enabled
        self.live = enabled and self.console.is_terminal
        self._progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("steps  loss {task.fields[loss]}"), TilesPerSecondColumn(),
            TimeElapsedColumn(), TimeRemainingColumn(), console=self.console, transient=True,
            disable=not self.live,
        )
        self._task = None
        self._tiles = 0

    def __enter__(self) -> "EpochProgress":
        self._progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.__exit__(*exc)

    def start_epoch(self, epoch: int, epochs: int, total: int, completed: int = 0) -> None:
        """A new bar for ``epoch`` of ``epochs``; ``completed`` of its ``total`` steps are done."""
        if self._task is not None:
            self._progress.remove_task(self._task)
        self._tiles = 0
        self._task = self._progress.add_task("train", total=total, completed=completed,
                                             epoch=f"{epoch}/{epochs}", loss="-", tiles=0)

    def advance(self, loss: float | None = None, tiles: int = 0) -> None:
        """One optimiser step done, with its loss and the tiles it trained (all ranks)."""
        self._tiles += tiles
        fields: dict[str, object] = {"tiles": self._tiles}
        if loss is not None:
            fields["loss"] = f"{loss:.4f}"
        self._progress.update(self._task, advance=1, **fields)

    def end_epoch(self, summary: str) -> None:
        """Close the epoch's bar and print its one-line summary."""
        if self._task is not None:
            self._progress.remove_task(self._task)
            self._task = None
        if self.enabled:
            self.console.print(summary, highlight=False, soft_wrap=True)

    def note(self, message: str) -> None:
        """A line for the user above the bar (the run's start, a resume)."""
        if self.enabled:
            self.console.print(message, highlight=False, soft_wrap=True)

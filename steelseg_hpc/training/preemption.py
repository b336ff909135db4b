"""Cooperative stop on preemption: a signal only sets a flag; the loop saves and stops at a step.

SLURM sends SIGUSR2 to every task of a job shortly before its time limit or on preemption
(SIGTERM when it finally kills it). A checkpoint needs collective operations on every rank, which
must never run inside a signal handler, so :class:`StopRequest`'s handler only records the
signal. The training loop asks at every optimiser-step boundary whether any rank was signalled
(one tiny all-reduce), and then every rank saves a mid-epoch checkpoint together and ``train``
raises :class:`TrainingPreempted`. Whoever installed the request (the SLURM job, the CLI) then
decides what a stop means: requeue through submitit's own handler, or exit with a message.

Example:
    >>> import os, signal
    >>> with StopRequest(signals=(signal.SIGUSR2,)) as stop:
    ...     os.kill(os.getpid(), signal.SIGUSR2)
    ...     stop.requested, stop.signal_name
    (True, 'SIGUSR2')
"""
from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any, Iterable

#: The signals a job is asked to stop by: SLURM's warning (USR2) and a plain kill (TERM).
STOP_SIGNALS = (signal.SIGUSR2, signal.SIGTERM)
#: What :meth:`StopRequest.poll` reports for a stop-request *file* (no signal has this number):
#: the run ends for good instead of being preempted.
STOP_FILE = 1000


class TrainingPreempted(Exception):
    """``train`` stopped early because a stop was requested; its state is in ``checkpoint``.

    Not a :class:`~steelseg_hpc.core.errors.SteelsegError`: nothing is wrong, the run resumes from
    ``checkpoint`` (or from the latest one, when nothing new was trained) when started again.

    Attributes:
        checkpoint: The tag of the checkpoint that holds everything trained so far (None on
            ranks other than 0 when nothing new was saved, or when nothing was trained yet).
        epoch: The epoch that was in progress.
        micro_batches: Micro-batches of that epoch already trained (and saved).
        signal: The signal that asked for the stop, whichever rank received it.
    """

    def __init__(self, checkpoint: str | None, epoch: int, micro_batches: int, signal_number: int) -> None:
        self.checkpoint, self.epoch, self.micro_batches = checkpoint, epoch, micro_batches
        self.signal = signal.Signals(signal_number)
        where = f"checkpoint {checkpoint}" if checkpoint else "the latest checkpoint"
        super().__init__(f"stopped on {self.signal.name} in epoch {epoch} after "
                         f"{micro_batches} micro-batches; resume from {where}")


class StopRequest:
    """Records SIGUSR2/SIGTERM instead of dying, so training can stop at the next step.

    Install it (as a context manager, or with :meth:`install` / :meth:`restore`) in the main
    thread of every rank. The handlers it replaces are kept, so a caller can hand the signal on
    to them afterwards with :meth:`hand_over` (submitit's requeue handler, for instance).

    Args:
        signals: The signals to catch.
    """

    def __init__(self, signals: Iterable[signal.Signals] = STOP_SIGNALS) -> None:
        self.signals = tuple(signals)
        self.received: signal.Signals | None = None
        self.stop_file: Path | None = None
        self._previous: dict[signal.Signals, Any] = {}

    def watch(self, stop_file: Path) -> None:
        """Also stop when ``stop_file`` appears (checked at every optimiser step)."""
        self.stop_file = Path(stop_file)

    def poll(self) -> int:
        """The received signal's number, :data:`STOP_FILE` if the watched file exists, else 0."""
        if self.received is not None:
            return int(self.received)
        if self.stop_file is not None and self.stop_file.exists():
            return STOP_FILE
        return 0

    @property
    def requested(self) -> bool:
        return self.received is not None

    @property
    def signal_name(self) -> str | None:
        return None if self.received is None else signal.Signals(self.received).name

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        # Only a flag: the loop does the saving, outside the handler and on every rank together.
        if self.received is None:
            self.received = signal.Signals(signum)

    def install(self) -> "StopRequest":
        """Catch the signals from now on (main thread only; elsewhere this does nothing)."""
        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def restore(self) -> None:
        """Put back the handlers that were there before :meth:`install`."""
        for sig, previous in self._previous.items():
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._previous = {}

    def hand_over(self, sig: signal.Signals | None = None) -> bool:
        """Restore the previous handlers and call the one of ``sig``, if callable.

        Under submitit this runs its ``checkpoint_and_try_requeue`` for SIGUSR2: task 0 pickles
        the job, requeues it and exits (``SystemExit``); the other tasks return.

        Args:
            sig: The signal to hand on; default the one this process received. (A rank may stop
                because another rank was signalled.)

        Returns:
            Whether a previous handler was called (False for none, SIG_DFL or SIG_IGN).
        """
        sig = sig if sig is not None else self.received
        previous = self._previous.get(sig) if sig is not None else None
        self.restore()
        if not callable(previous):
            return False
        previous(int(sig), None)
        return True

    def __enter__(self) -> "StopRequest":
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.restore()

"""Third-party log records go to ``train.log``, not the console: the user sees their run's progress.

DeepSpeed, torch and Python's ``warnings`` speak up during a run (an accelerator guess, a
"get learning rate before scheduler started" warning, torch's CUDA_HOME notice, deprecation
warnings). :class:`ThirdPartyLogs` takes those loggers over for the duration of a run: records
are buffered until the run's ``train.log`` is open (the run directory is written only once the
run is validated), then written there. With ``--verbose`` (the root logger at INFO or below) they
reach the console as well.

Example:
    >>> import logging
    >>> with ThirdPartyLogs() as captured:
    ...     logging.getLogger("DeepSpeed").warning("noise")
    ...     captured.buffered()
    1
"""
from __future__ import annotations

import contextlib
import logging
import logging.handlers
import sys
from collections.abc import Iterator

#: Loggers that belong to libraries, not to the user's run.
THIRD_PARTY = ("DeepSpeed", "deepspeed", "torch", "py.warnings", "distributed", "submitit")


class ThirdPartyLogs:
    """Route :data:`THIRD_PARTY` loggers into a buffer, then into a file handler."""

    def __init__(self, names: tuple[str, ...] = THIRD_PARTY) -> None:
        self.names = names
        self._buffer = logging.handlers.MemoryHandler(capacity=10_000, flushLevel=logging.CRITICAL + 1)
        self._saved: dict[str, tuple[list[logging.Handler], bool]] = {}
        self._console: logging.Handler | None = None
        self._captured_warnings = False

    def buffered(self) -> int:
        return len(self._buffer.buffer)

    def __enter__(self) -> "ThirdPartyLogs":
        verbose = logging.getLogger().getEffectiveLevel() <= logging.INFO
        if verbose:
            self._console = logging.StreamHandler(sys.stderr)
        self._captured_warnings = not logging.getLogger("py.warnings").handlers
        logging.captureWarnings(True)
        for name in self.names:
            self.take_over(name)
        return self

    def take_over(self, name: str) -> None:
        """Capture ``name`` (again: a library may add its own handler when it is imported)."""
        logger = logging.getLogger(name)
        if name not in self._saved:
            self._saved[name] = (list(logger.handlers), logger.propagate)
        for handler in list(logger.handlers):
            if handler not in (self._buffer, self._console):
                logger.removeHandler(handler)
        logger.addHandler(self._buffer)
        if self._console is not None:
            logger.addHandler(self._console)
        # Levels stay as the libraries set them: raising one would switch on their children's
        # own handlers (torch's distributed loggers print INFO records directly).
        logger.propagate = False

    def write_to(self, handler: logging.Handler) -> None:
        """From now on (and for everything buffered so far) write records to ``handler``."""
        self._buffer.setTarget(handler)
        self._buffer.flush()
        self._buffer.flushLevel = logging.NOTSET  # unbuffered from here on

    def __exit__(self, *exc: object) -> None:
        self._buffer.flush()
        for name, (handlers, propagate) in self._saved.items():
            logger = logging.getLogger(name)
            for handler in list(logger.handlers):
                logger.removeHandler(handler)
            for handler in handlers:
                logger.addHandler(handler)
            logger.propagate = propagate
        self._saved.clear()
        if self._captured_warnings:
            logging.captureWarnings(False)
        self._buffer.setTarget(None)


@contextlib.contextmanager
def run_log(attach, third_party: ThirdPartyLogs | None) -> Iterator[logging.Handler | None]:
    """Send the package's records (and ``third_party``'s) to the handler ``attach()`` returns.

    On exit the handler is removed and closed and the package logger's level restored
    (``attach`` may lower it to INFO). ``attach`` None (ranks other than 0): nothing is written.
    """
    package_logger = logging.getLogger("steelseg_hpc")
    previous_level = package_logger.level
    handler = attach() if attach is not None else None
    if handler is not None and third_party is not None:
        third_party.write_to(handler)
    try:
        yield handler
    finally:
        if handler is not None:
            package_logger.removeHandler(handler)
            package_logger.setLevel(previous_level)
            handler.close()

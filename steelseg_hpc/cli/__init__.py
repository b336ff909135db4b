"""The ``steelseg-hpc`` command line: thin click commands over the package's API.

Each command group lives in its own module and registers itself on :data:`main`. Errors derived
from :class:`~steelseg_hpc.errors.SteelsegError` become one line on stderr and exit code 2.
"""
from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from steelseg_hpc.cli._app import main  # noqa: E402

# Importing a module registers its commands on ``main``.
from steelseg_hpc.cli import data as _data  # noqa: E402,F401
from steelseg_hpc.cli import models as _models  # noqa: E402,F401
from steelseg_hpc.cli import train as _train  # noqa: E402,F401
from steelseg_hpc.cli import launch as _launch  # noqa: E402,F401
from steelseg_hpc.cli import demo as _demo  # noqa: E402,F401

__all__ = ["main"]

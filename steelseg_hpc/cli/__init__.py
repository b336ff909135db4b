"""The ``steelseg-hpc`` command line: thin click commands over the package's API.

Each command group lives in its own module and registers itself on :data:`main` when first needed
(see :data:`~steelseg_hpc.cli._app.COMMAND_MODULES`). Errors derived from
:class:`~steelseg_hpc.core.errors.SteelsegError` become one line on stderr and exit code 2.
"""
from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from steelseg_hpc.cli._app import main  # noqa: E402

__all__ = ["main"]

"""Package namespaces that import their modules on first use (PEP 562), as Optuna's ``_LazyImport``.

A stage's ``__init__`` re-exports its public names without importing the modules behind them, so
``import steelseg_hpc.launch.status`` does not pull in the training engine (torch, DeepSpeed) and
``steelseg-hpc status`` starts in a fraction of a second on a login node.

Example:
    >>> getattr_, dir_ = lazy_exports("steelseg_hpc.core", {"atomic_write_text": "io"})
    >>> getattr_("atomic_write_text").__module__, dir_()
    ('steelseg_hpc.core.io', ['atomic_write_text'])
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` serving ``name -> package.module.name`` lazily.

    Args:
        package: The package's ``__name__``.
        exports: Public name -> the submodule (relative to ``package``) that defines it.

    Returns:
        The two module-level functions to assign in the package's ``__init__``.
    """

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{module}"), name)

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__

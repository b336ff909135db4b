"""``compile = true``: can torch.compile run here? Asked once, before a run starts.

torch.compile needs a working backend on the machine: inductor writes C++ and builds it with the
system's C++ compiler on the CPU, and writes Triton kernels on CUDA. Without one, the first
forward fails deep inside the compiler with a long traceback, minutes into a job. Compiling and
running a tiny function on the run's device first turns that into one line at the start.

Example:
    >>> problem = compile_problem("cpu")  # doctest: +SKIP
    >>> problem is None or problem.startswith("torch.compile")  # doctest: +SKIP
    True
"""
from __future__ import annotations

import functools

import torch

from steelseg_hpc.core.errors import ConfigError


def _probe(x: torch.Tensor) -> torch.Tensor:
    return torch.sin(x) * 2 + 1


@functools.cache
def compile_problem(device_type: str) -> str | None:
    """Why torch.compile cannot run on ``device_type`` here (one line), or None when it can.

    The answer is cached for the process: the probe costs a compilation (seconds on a GPU
    machine, ~20 s on a small CPU).
    """
    x = torch.linspace(0, 1, 8, device=device_type)
    try:
        compiled = torch.compile(_probe, backend="inductor", fullgraph=True, dynamic=False)
        result = compiled(x)
    except Exception as exc:  # noqa: BLE001 - any failure means: not usable here
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        detail = lines[0] if lines else ""
        return f"torch.compile failed on {device_type}: {type(exc).__name__}: {detail[:300]}"
    if not torch.allclose(result, _probe(x)):
        return f"torch.compile computed wrong values on {device_type}"
    return None


def check_compile(device_type: str) -> None:
    """Raise a one-line ConfigError when ``compile = true`` cannot work on ``device_type``."""
    problem = compile_problem(device_type)
    if problem is not None:
        raise ConfigError(f"compile = true, but {problem}; set compile = false for this machine")

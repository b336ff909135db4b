"""Reports: a sweep's plots and answers (``sweep report``), the lab's comparison page (``report``).

Names are imported on first use (matplotlib loads only for a report).
"""
from steelseg_hpc.core.lazy import lazy_exports

__all__ = ["build_report", "print_sweep_report", "sweep_report"]

__getattr__, __dir__ = lazy_exports(__name__, {
    "build_report": "page",
    "sweep_report": "sweep",
    "print_sweep_report": "sweep",
})

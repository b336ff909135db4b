"""The demo: the whole journey (data → zoo → evaluation → sweep → report) as one library call.

Names are imported on first use.
"""
from steelseg_hpc.core.lazy import lazy_exports

__all__ = ["Journey", "JourneyOptions", "quick_demo"]

__getattr__, __dir__ = lazy_exports(__name__, {
    "Journey": "journey",
    "JourneyOptions": "options",
    "quick_demo": "journey",
})

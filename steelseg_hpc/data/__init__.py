"""Data: dataset specs, synthetic data, ``prep`` into a Zarr tile store, and loading it back.

Names are imported on first use (Zarr, albumentations and OpenCV load only when needed).
"""
from steelseg_hpc.core.lazy import lazy_exports

__all__ = [
    "DatasetSpec",
    "LoadedSpec",
    "PrepSummary",
    "StoreInfo",
    "TileDataset",
    "WholeImages",
    "load_spec",
    "make_synthetic_dataset",
    "open_store",
    "prepare",
    "read_provenance",
]

__getattr__, __dir__ = lazy_exports(__name__, {
    "TileDataset": "dataset",
    "PrepSummary": "prep",
    "prepare": "prep",
    "DatasetSpec": "spec",
    "LoadedSpec": "spec",
    "load_spec": "spec",
    "StoreInfo": "store",
    "WholeImages": "store",
    "open_store": "store",
    "read_provenance": "store",
    "make_synthetic_dataset": "synth",
})

"""Data: dataset specs, synthetic data, ``prep`` into a Zarr tile store, and loading it back.

Names are imported on first use (Zarr, albumentations and OpenCV load only when needed).
"""
from steelseg_hpc.core.lazy import lazy_exports

__all__ = [
    "DatasetSpec",
    "ForeignFolderError",
    "LoadedSpec",
    "PrepSummary",
    "StoreInfo",
    "check_same_store",
    "TileDataset",
    "WholeImages",
    "load_spec",
    "make_synthetic_dataset",
    "open_store",
    "prepare",
    "read_provenance",
    "store_identity",
]

__getattr__, __dir__ = lazy_exports(__name__, {
    "TileDataset": "dataset",
    "PrepSummary": "prep",
    "prepare": "prep",
    "DatasetSpec": "spec",
    "LoadedSpec": "spec",
    "load_spec": "spec",
    "StoreInfo": "store",
    "check_same_store": "store",
    "WholeImages": "store",
    "open_store": "store",
    "read_provenance": "store",
    "store_identity": "store",
    "ForeignFolderError": "synth",
    "make_synthetic_dataset": "synth",
})

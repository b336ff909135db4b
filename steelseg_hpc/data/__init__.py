"""Data: dataset specs, synthetic data, ``prep`` into a Zarr tile store, and loading it back."""
from steelseg_hpc.data.boxes import mask_to_boxes
from steelseg_hpc.data.dataset import TileDataset
from steelseg_hpc.data.prep import PrepSummary, prepare
from steelseg_hpc.data.spec import DatasetSpec, LoadedSpec, load_spec
from steelseg_hpc.data.store import StoreInfo, WholeImages, open_store, read_provenance

__all__ = [
    "DatasetSpec",
    "LoadedSpec",
    "PrepSummary",
    "StoreInfo",
    "TileDataset",
    "WholeImages",
    "load_spec",
    "mask_to_boxes",
    "open_store",
    "prepare",
    "read_provenance",
]

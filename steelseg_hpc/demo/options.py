"""What the journey runs (``steelseg-hpc demo`` shows these defaults in its ``--help``).

Apart from :mod:`~steelseg_hpc.demo.journey` so that reading the defaults loads nothing heavy.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from steelseg_hpc.launch import ExperimentIndex


@dataclass
class JourneyOptions:
    """What the journey runs; the defaults fit a 2-core laptop CPU in about ten minutes."""

    folder: Path | None = None           # default: the journey's name (demo, demo-metaldam, ...)
    dataset: str = "synthetic"           # "synthetic" or "metaldam"
    spec: Path | None = None             # any dataset spec instead (with ``raw``)
    raw: Path | None = None
    size: tuple[int, int] = (256, 256)   # synthetic images (W, H)
    tile_size: int = 128
    workers: int = 2                     # Dask workers for prep
    width: int = 4                       # base_channels of the CNNs
    epochs: int = 4
    max_train_tiles: int = 128
    micro_batch: int = 4
    sweep_ranks: tuple[int, ...] = (0, 4, 16)
    index: ExperimentIndex = field(default_factory=ExperimentIndex)

    def __post_init__(self) -> None:
        # Each dataset's journey has its own folder, so a MetalDAM demo never meets the synthetic
        # demo's store (which prep would refuse as prepared from another spec).
        if self.folder is None:
            self.folder = Path(self.name)

    @property
    def name(self) -> str:
        if self.spec is not None:
            return f"demo-{Path(self.spec).stem}"
        return "demo" if self.dataset == "synthetic" else f"demo-{self.dataset}"

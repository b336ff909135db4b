"""Sliding windows that cover every pixel, the last one flush with the edge.

Example:
    >>> window_starts(10, tile=4, stride=3)
    [0, 3, 6]
    >>> window_starts(11, tile=4, stride=3)
    [0, 3, 6, 7]
"""
from __future__ import annotations


def window_starts(length: int, tile: int, stride: int) -> list[int]:
    """Start offsets of windows of size ``tile`` along an axis of ``length`` pixels.

    Windows step by ``stride``; if the last regular window stops short of the edge, one more
    window flush with the edge is added, so every pixel is covered and no window leaves the image.
    """
    if tile <= 0 or stride <= 0:
        raise ValueError(f"tile and stride must be positive, got tile={tile} stride={stride}")
    if stride > tile:
        raise ValueError(f"stride {stride} > tile {tile} would leave pixels between windows uncovered")
    if length < tile:
        raise ValueError(f"axis of {length} px is smaller than a {tile} px tile")
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return starts


def windows(height: int, width: int, tile: int, stride: int) -> list[tuple[int, int]]:
    """All (y, x) top-left corners of the tiles of an image, row by row."""
    return [(y, x) for y in window_starts(height, tile, stride) for x in window_starts(width, tile, stride)]

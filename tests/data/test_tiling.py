import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from steelseg_hpc.data.tiling import window_starts, windows


@st.composite
def axis(draw):
    tile = draw(st.integers(1, 64))
    return tile, draw(st.integers(0, 300)), draw(st.integers(1, tile))


@settings(max_examples=300, deadline=None)
@given(axis())
def test_windows_cover_every_pixel_and_stay_inside(case):
    tile, extra, stride = case
    length = tile + extra
    starts = window_starts(length, tile, stride)
    covered = np.zeros(length, dtype=bool)
    for s in starts:
        assert 0 <= s <= length - tile
        covered[s : s + tile] = True
    assert covered.all()
    assert starts == sorted(set(starts))
    assert starts[-1] == length - tile  # the last window is flush with the edge


@settings(max_examples=300, deadline=None)
@given(axis())
def test_window_count_matches_formula(case):
    tile, extra, stride = case
    length = tile + extra
    regular = extra // stride + 1
    expected = regular + (1 if (regular - 1) * stride != extra else 0)
    assert len(window_starts(length, tile, stride)) == expected


@given(h=st.integers(8, 120), w=st.integers(8, 120), tile=st.integers(4, 8), stride=st.integers(1, 4))
def test_2d_windows_are_the_product_of_the_axes(h, w, tile, stride):
    corners = windows(h, w, tile, stride)
    assert len(corners) == len(window_starts(h, tile, stride)) * len(window_starts(w, tile, stride))
    mask = np.zeros((h, w), dtype=bool)
    for y, x in corners:
        mask[y : y + tile, x : x + tile] = True
    assert mask.all()


def test_rejects_short_axis_and_bad_stride():
    with pytest.raises(ValueError, match="smaller than"):
        window_starts(5, 8, 4)
    with pytest.raises(ValueError, match="uncovered"):
        window_starts(10, 4, 5)
    with pytest.raises(ValueError, match="positive"):
        window_starts(10, 4, 0)

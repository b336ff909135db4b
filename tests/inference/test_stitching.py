"""Sliding-window stitching is exact for pointwise models and covers every pixel."""
import pytest
import torch

from steelseg_hpc.inference.stitching import gaussian_importance, sliding_window_logits, tile_starts


def pointwise_model(tiles, masks):
    # Three "classes", each a different nonlinear function of the pixel value.
    return torch.cat([tiles, torch.sin(3 * tiles), tiles**2 - 0.5], dim=1)


def expected(image):
    return torch.stack([image, torch.sin(3 * image), image**2 - 0.5])


SMALL_SHAPES = [(64, 64), (100, 130), (150, 97), (40, 50)]


# The full MetalDAM size runs without TTA only: flips are already checked on the small shapes.
@pytest.mark.parametrize(
    ("shape", "tta"), [(s, t) for s in SMALL_SHAPES for t in (False, True)] + [((703, 1024), False)]
)
def test_pointwise_model_is_reproduced_across_seams(shape, tta):
    image = torch.rand(shape, generator=torch.Generator().manual_seed(1))
    logits = sliding_window_logits(image, pointwise_model, tile=64, num_classes=3, tta=tta, batch_size=16)
    assert logits.shape == (3, *shape)
    torch.testing.assert_close(logits, expected(image), atol=1e-5, rtol=1e-5)


def test_tiles_see_their_own_truth_mask():
    image = torch.rand(90, 120)
    mask = (torch.rand(90, 120) * 3).long()
    echo = lambda tiles, masks: torch.nn.functional.one_hot(masks, 3).permute(0, 3, 1, 2).float()  # noqa: E731
    logits = sliding_window_logits(image, echo, tile=64, num_classes=3, mask=mask, tta=True)
    assert torch.equal(logits.argmax(0), mask)


def test_tile_starts_overlap_by_half_and_touch_both_edges():
    assert tile_starts(64, 64) == [0]
    assert tile_starts(50, 64) == [0]
    starts = tile_starts(1024, 256)
    assert starts[0] == 0 and starts[-1] == 1024 - 256
    assert all(b - a <= 128 for a, b in zip(starts, starts[1:]))


def test_gaussian_importance_peaks_in_the_centre_and_is_positive():
    weight = gaussian_importance(64, 0.125)
    assert weight.shape == (64, 64)
    assert float(weight.max()) == pytest.approx(1.0, abs=1e-3)
    assert float(weight.min()) > 0
    assert weight[32, 32] > weight[32, 48] > weight[32, 63]

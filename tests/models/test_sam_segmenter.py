"""The ``sam-lora`` architecture: tile geometry, both prompt modes, what trains, overfitting."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from steelseg_hpc.core.errors import ConfigError
from steelseg_hpc.models import build_model, list_models
from steelseg_hpc.models.sam_box_prompt import NO_BOX_LOGIT, box_targets, merge_box_logits
from steelseg_hpc.models.sam_geometry import (
    PIXEL_MEAN,
    PIXEL_STD,
    TileGeometry,
    sam_logits_to_tiles,
    tiles_to_sam_input,
)


def _tiny(**options):
    torch.manual_seed(0)
    defaults = {"num_classes": 3, "rank": 4, "variant": "tiny", "image_size": 64}
    return build_model("sam-lora", **{**defaults, **options})


def _tile_and_mask(size: int = 64):
    """A textured tile with three phases: background, a bar and a square."""
    mask = torch.zeros(1, size, size, dtype=torch.long)
    mask[:, 10:30, 5:40] = 1
    mask[:, 40:60, 40:60] = 2
    tile = 0.5 + 0.05 * torch.randn(1, 1, size, size, generator=torch.Generator().manual_seed(0))
    tile[:, 0][mask == 1] -= 0.35
    tile[:, 0][mask == 2] += 0.35
    return tile.clamp(0, 1), mask


# ---------------------------------------------------------------- geometry
def test_padding_never_reaches_the_tile():
    geometry = TileGeometry.of((48, 80), sam_size=128)
    assert geometry.resized_hw == (77, 128)
    logits = -torch.ones(1, 1, 128, 128)
    logits[..., :77, :128] = 1.0  # +1 on the resized tile, -1 on the padding
    # Bilinear weights sum to 1 up to float rounding; any padding leak would pull values to < 1.
    torch.testing.assert_close(sam_logits_to_tiles(logits, geometry), torch.ones(1, 1, 48, 80), rtol=0, atol=1e-6)


def test_same_size_tile_maps_back_to_identical_pixels():
    tile = torch.rand(2, 1, 64, 64)
    images, geometry = tiles_to_sam_input(tile, 64)
    mean, std = torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1), torch.tensor(PIXEL_STD).view(1, 3, 1, 1)
    pixels = (images * std + mean) / 255.0
    torch.testing.assert_close(sam_logits_to_tiles(pixels[:, :1], geometry), tile, rtol=0, atol=1e-6)


def _round_trip(tile: torch.Tensor, sam_size: int) -> torch.Tensor:
    """Tile -> SAM input -> (un-normalised red channel as 'logits') -> tile pixels."""
    images, geometry = tiles_to_sam_input(tile, sam_size)
    assert images.shape == (tile.shape[0], 3, sam_size, sam_size)
    return sam_logits_to_tiles((images[:, :1] * PIXEL_STD[0] + PIXEL_MEAN[0]) / 255.0, geometry)


@pytest.mark.parametrize(("tile_hw", "sam_size"), [((48, 80), 128), ((70, 70), 128), ((64, 100), 256)])
def test_enlarged_tiles_map_back_to_the_same_pixels(tile_hw, sam_size):
    tile = torch.zeros(1, 1, *tile_hw)
    tile[..., 5 : tile_hw[0] // 3, 3 : tile_hw[1] // 2] = 1.0  # a block with sharp edges
    assert torch.equal(_round_trip(tile, sam_size) > 0.5, tile > 0.5)


def test_shrunk_tiles_stay_aligned():
    """Shrinking loses detail, but not position: the block's centroid stays within 0.1 px."""
    tile = torch.zeros(1, 1, 96, 40)
    tile[..., 10:32, 4:20] = 1.0
    back = _round_trip(tile, 64)
    assert back.shape == tile.shape
    rows, cols = torch.meshgrid(torch.arange(96.0), torch.arange(40.0), indexing="ij")

    def centroid(image: torch.Tensor) -> torch.Tensor:
        weights = image[0, 0] / image.sum()
        return torch.stack([(weights * rows).sum(), (weights * cols).sum()])

    torch.testing.assert_close(centroid(back), centroid(tile), rtol=0, atol=0.1)


@pytest.mark.parametrize("tile_hw", [(16, 16), (40, 56), (130, 70)])
def test_none_mode_returns_class_logits_at_tile_pixels(tile_hw):
    model = _tiny(num_classes=5)
    logits = model(torch.rand(2, 1, *tile_hw))
    assert logits.shape == (2, 5, *tile_hw) and torch.isfinite(logits).all()


# ---------------------------------------------------------------- box mode
def test_box_mode_forward_without_masks_is_a_clear_error():
    with pytest.raises(ConfigError, match="needs the ground-truth masks"):
        _tiny(prompt="box")(torch.rand(1, 1, 64, 64))


def test_merge_box_logits_takes_the_best_box_per_class():
    boxes = torch.tensor([[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 1.0, 1.0]])
    class_ids = torch.tensor([0, 1, 1])
    box_logits = torch.stack([torch.full((3, 3), 2.0), torch.full((3, 3), 5.0), torch.full((3, 3), 7.0)])
    merged = merge_box_logits(box_logits, boxes, class_ids, num_classes=3)
    assert merged[0, 0, 0] == 2.0 and merged[1, 0, 0] == 7.0 and merged[1, 1, 1] == 5.0
    assert merged[0, 2, 2] == NO_BOX_LOGIT and (merged[2] == NO_BOX_LOGIT).all()


def test_box_targets_are_the_class_pixels_inside_each_box():
    _, mask = _tile_and_mask()
    targets = box_targets(mask[0], torch.tensor([[5.0, 10.0, 40.0, 30.0]]), torch.tensor([1]))
    assert targets.shape == (1, 64, 64) and torch.equal(targets[0].bool(), mask[0] == 1)


def test_box_mode_loss_and_semantic_logits():
    model = _tiny(prompt="box")
    tiles, mask = _tile_and_mask()
    loss, logits = model.loss_and_logits(tiles.repeat(2, 1, 1, 1), mask.repeat(2, 1, 1), loss_fn=None)
    assert loss.ndim == 0 and loss.requires_grad and logits.shape == (2, 3, 64, 64)


# ---------------------------------------------------------------- what trains
def _trainable_parts(model) -> set[str]:
    return {name.split(".")[2] for name, p in model.named_parameters() if p.requires_grad}


def test_trainable_parts_follow_the_options():
    assert _trainable_parts(_tiny()) == {"image_encoder", "mask_decoder"}
    assert _trainable_parts(_tiny(train_mask_decoder=False)) == {"image_encoder"}
    assert _trainable_parts(_tiny(train_prompt_encoder=True)) == {"image_encoder", "mask_decoder", "prompt_encoder"}
    encoder_trainable = [n for n, p in _tiny().named_parameters() if p.requires_grad and "image_encoder" in n]
    assert encoder_trainable and all(".linear_a_" in n or ".linear_b_" in n for n in encoder_trainable)


def test_adapted_segmenter_equals_unadapted_at_init():
    tiles = torch.rand(2, 1, 48, 64)
    with torch.no_grad():
        torch.testing.assert_close(_tiny(rank=16)(tiles), _tiny(rank=0)(tiles), rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "options",
    [{"prompt": "points"}, {"variant": "vit_x"}, {"in_channels": 2}, {"rank": -2}, {"unknown_option": 1}],
)
def test_bad_options_are_config_errors(options):
    assert "sam-lora" in list_models()
    with pytest.raises(ConfigError):
        _tiny(**options)


# ---------------------------------------------------------------- overfitting
@pytest.mark.parametrize("prompt", ["none", "box"])
def test_overfits_one_tile(prompt):
    model = _tiny(prompt=prompt, rank=8).train()
    tiles, mask = _tile_and_mask()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(14):
        loss, logits = model.loss_and_logits(tiles, mask, lambda lg, tg: F.cross_entropy(lg, tg))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert logits.shape == (1, 3, 64, 64)
    assert losses[-1] < 0.8 * losses[0], losses


# ---------------------------------------------------------------- bf16-cast models
def test_position_encoding_swap_changes_nothing_in_float32():
    from steelseg_hpc.models.sam_build import build_tiny_sam
    from steelseg_hpc.models.sam_decoder import make_position_embedding_dtype_safe

    prompt_encoder = build_tiny_sam().prompt_encoder
    boxes = torch.tensor([[3.0, 4.0, 90.0, 60.0]])
    expected_pe, expected_sparse = prompt_encoder.get_dense_pe(), prompt_encoder(None, boxes, None)[0]
    make_position_embedding_dtype_safe(prompt_encoder)
    torch.testing.assert_close(prompt_encoder.get_dense_pe(), expected_pe, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(prompt_encoder(None, boxes, None)[0], expected_sparse, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("prompt", ["none", "box"])
def test_a_model_cast_to_bf16_trains(prompt):
    """DeepSpeed's bf16 mode casts the whole model; SAM's prompt path must follow."""
    model = _tiny(prompt=prompt).to(torch.bfloat16)
    tiles, mask = _tile_and_mask()
    loss, logits = model.loss_and_logits(tiles.bfloat16(), mask, lambda lg, tg: F.cross_entropy(lg.float(), tg))
    loss.backward()
    assert logits.shape == (1, 3, 64, 64) and torch.isfinite(loss)

"""Building SAM variants from local checkpoints, and the errors for bad files."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from steelseg_hpc.core.errors import ConfigError, DataError
from steelseg_hpc.models import build_model
from steelseg_hpc.models.sam_build import build_sam, build_tiny_sam


@pytest.fixture(scope="module")
def vit_b_checkpoint(tmp_path_factory):
    """A vit_b state dict saved from a randomly initialised model (~360 MB, built once)."""
    torch.manual_seed(0)
    state = build_sam("vit_b").state_dict()
    path = tmp_path_factory.mktemp("sam") / "sam_vit_b_random.pth"
    torch.save(state, path)
    probe = {k: state[k].clone() for k in ("image_encoder.blocks.3.attn.qkv.weight", "mask_decoder.iou_token.weight")}
    del state
    yield path, probe
    path.unlink()  # pytest keeps old temp dirs; do not leave 360 MB behind in each


def test_vit_b_state_dict_loads_by_path(vit_b_checkpoint):
    path, probe = vit_b_checkpoint
    sam = build_sam("vit_b", checkpoint=path)
    state = sam.state_dict()
    for key, value in probe.items():
        torch.testing.assert_close(state[key], value, rtol=0, atol=0)
    assert not sam.training


def test_vit_b_at_512_interpolates_position_embeddings(vit_b_checkpoint):
    path, _ = vit_b_checkpoint
    model = build_model("sam-lora", num_classes=3, rank=4, variant="vit_b", checkpoint=str(path), image_size=512)
    encoder = model.sam.image_encoder
    assert encoder.img_size == 512 and tuple(encoder.pos_embed.shape) == (1, 32, 32, 768)
    assert tuple(encoder.blocks[2].attn.rel_pos_h.shape) == (63, 64)  # global block: 2 * 32 - 1
    assert tuple(encoder.blocks[0].attn.rel_pos_h.shape) == (27, 64)  # windowed block keeps 2 * 14 - 1
    assert model.sam.prompt_encoder.image_embedding_size == (32, 32)


def test_sam_checkpoint_round_trips(sam_checkpoint, tmp_path):
    expected = torch.load(sam_checkpoint, weights_only=True)
    for path in (sam_checkpoint, tmp_path / "tiny.safetensors"):
        if path.suffix == ".safetensors":
            save_file({k: v.contiguous() for k, v in expected.items()}, str(path))
        state = build_sam("tiny", checkpoint=path).state_dict()
        assert all(torch.equal(state[k], v) for k, v in expected.items())


def test_missing_checkpoint_names_the_file(tmp_path):
    path = tmp_path / "nowhere" / "sam_vit_b_01ec64.pth"
    with pytest.raises(ConfigError, match=f"{path}.*does not exist"):
        build_sam("vit_b", checkpoint=path)


def test_truncated_checkpoint_names_the_file(sam_checkpoint):
    data = sam_checkpoint.read_bytes()
    sam_checkpoint.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=f"{sam_checkpoint}.*unreadable"):
        build_sam("tiny", checkpoint=sam_checkpoint)


def test_garbage_checkpoint_names_the_file(tmp_path):
    for name in ("junk.pth", "junk.safetensors"):
        path = tmp_path / name
        path.write_bytes(b"not a checkpoint at all")
        with pytest.raises(DataError, match=f"{path}.*unreadable") as caught:
            build_sam("tiny", checkpoint=path)
        assert "weights_only" not in str(caught.value)  # never advise loading untrusted pickles


def test_a_pickled_object_is_refused_not_executed(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": object()}, path)  # loading it needs weights_only=False: arbitrary code
    with pytest.raises(DataError, match="unreadable") as caught:
        build_sam("tiny", checkpoint=path)
    assert "weights_only" not in str(caught.value)


def test_a_folder_given_as_checkpoint_says_so(tmp_path):
    with pytest.raises(ConfigError, match=f"{tmp_path} is a folder; expected the checkpoint file in it"):
        build_sam("tiny", checkpoint=tmp_path)


def test_mismatched_checkpoint_names_the_file_and_its_variant(sam_checkpoint):
    with pytest.raises(DataError, match=f"{sam_checkpoint} does not match SAM vit_b.*looks like a tiny"):
        build_sam("vit_b", checkpoint=sam_checkpoint)


def test_checkpoint_that_is_not_a_state_dict(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(DataError, match=f"{path} does not hold a state dict"):
        build_sam("tiny", checkpoint=path)


@pytest.mark.parametrize(("variant", "image_size"), [("vit_q", None), ("tiny", 100), ("tiny", 16)])
def test_bad_variant_or_size_is_a_config_error(variant, image_size):
    with pytest.raises(ConfigError):
        build_sam(variant, image_size=image_size)

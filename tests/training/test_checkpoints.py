"""Checkpoint bookkeeping: atomic switch, pruning, best pointer, fallback past damaged ones."""
from pathlib import Path

import pytest

from steelseg_hpc.training.checkpoints import CheckpointManager


def writer(content: bytes):
    def write(folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "state.bin").write_bytes(content)
    return write


def test_latest_best_and_pruning(tmp_path):
    manager = CheckpointManager(tmp_path, keep=2)
    for epoch, score in [(1, 0.5), (2, 0.7), (3, 0.6), (4, 0.65)]:
        manager.save(epoch, score, writer(bytes([epoch]) * 100))
    assert manager.latest_tag() == "epoch0004"
    assert manager.best_tag() == "epoch0002"
    assert sorted(p.name for p in tmp_path.glob("epoch*")) == ["epoch0002", "epoch0003", "epoch0004"]
    assert manager.resume_tag() == "epoch0004"


def test_interrupted_save_leaves_previous_checkpoint_in_use(tmp_path):
    manager = CheckpointManager(tmp_path, keep=2)
    manager.save(1, 0.5, writer(b"one"))

    def crash(folder: Path) -> None:
        writer(b"half")(folder)
        raise KeyboardInterrupt  # as if killed while writing

    with pytest.raises(KeyboardInterrupt):
        manager.save(2, 0.9, crash)
    assert manager.resume_tag() == "epoch0001"
    assert manager.best_tag() == "epoch0001"
    manager.save(2, 0.9, writer(b"two"))  # the stale partial folder is replaced
    assert manager.resume_tag() == "epoch0002"
    assert not list(tmp_path.glob("*.partial"))


@pytest.mark.parametrize("damage", ["truncate", "flip", "pointer"])
def test_damaged_latest_falls_back_to_previous(tmp_path, damage):
    manager = CheckpointManager(tmp_path, keep=2)
    manager.save(1, 0.5, writer(b"a" * 64))
    manager.save(2, 0.4, writer(b"b" * 64))
    state = tmp_path / "epoch0002" / "state.bin"
    if damage == "truncate":
        state.write_bytes(b"b" * 10)
    elif damage == "flip":
        state.write_bytes(b"c" + b"b" * 63)
    else:
        (tmp_path / "latest").write_text("garbage\x00")
    expected = "epoch0002" if damage == "pointer" else "epoch0001"
    assert manager.resume_tag() == expected


def test_nothing_to_resume(tmp_path):
    assert CheckpointManager(tmp_path).resume_tag() is None


def test_mid_epoch_checkpoint_orders_between_epochs_and_is_never_best(tmp_path):
    manager = CheckpointManager(tmp_path, keep=2)
    manager.save(1, 0.5, writer(b"1"))
    tag = manager.save(2, 0.9, writer(b"2a"), micro_batches=40)  # a score here is ignored
    assert tag == "epoch0002-mb000040"
    assert manager.latest_tag() == manager.resume_tag() == tag
    assert manager.best_tag() == "epoch0001"
    assert manager.meta(tag)["micro_batches"] == 40 and manager.meta(tag)["score"] is None
    manager.save(2, 0.6, writer(b"2"))
    assert manager.complete_tags() == ["epoch0002", "epoch0002-mb000040"]  # epoch 1 no longer best
    assert manager.resume_tag() == "epoch0002" and manager.best_tag() == "epoch0002"
    manager.save(3, 0.1, writer(b"3"), micro_batches=8)
    # keep=2 newest (epoch 3's mid-epoch one and epoch 2, also best) are all that stay
    assert manager.complete_tags() == ["epoch0003-mb000008", "epoch0002"]

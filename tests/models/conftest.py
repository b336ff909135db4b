"""Fixtures shared by the SAM_LoRA tests."""
import pytest
import torch

from steelseg_hpc.models.sam_build import build_tiny_sam


@pytest.fixture()
def sam_checkpoint(tmp_path):
    """A state dict of a randomly initialised tiny SAM, saved where a real checkpoint would be."""
    torch.manual_seed(0)
    path = tmp_path / "tiny_sam.pth"
    torch.save(build_tiny_sam().state_dict(), path)
    return path


@pytest.fixture(autouse=True)
def _one_thread(request):
    """SAM tests run on one intra-op thread: on a 2-core host two threads oversubscribe (~3x slower)."""
    if "test_sam_" not in request.node.nodeid:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

import pytest

from steelseg_hpc.launch import ExperimentIndex


@pytest.fixture
def index_file(tmp_path) -> ExperimentIndex:
    """An empty experiment index of the test's own (no sweeps, no experiments)."""
    return ExperimentIndex(tmp_path / "index.sqlite")

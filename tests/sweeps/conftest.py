"""The sweep tests share the launcher tests' fixture for the real local SLURM."""
from tests.launch.conftest import slurm_cluster  # noqa: F401  (a pytest fixture, used by name)

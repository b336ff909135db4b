"""The compute layer: cluster profiles, SLURM's command-line tools, and the Dask cluster factory.

Shared by ``prep`` (Dask workers) and ``launch`` (training jobs). Names are imported on first use
(Dask loads only when a cluster is made).
"""
from steelseg_hpc.core.lazy import lazy_exports

__all__ = [
    "ClusterProfile",
    "TaskRunner",
    "check_profile",
    "connect",
    "load_profile",
    "make_dask_cluster",
    "resolve_profile_path",
]

__getattr__, __dir__ = lazy_exports(__name__, {
    "ClusterProfile": "profiles",
    "check_profile": "profiles",
    "load_profile": "profiles",
    "resolve_profile_path": "profiles",
    "connect": "dask_cluster",
    "make_dask_cluster": "dask_cluster",
    "TaskRunner": "tasks",
})

"""The command line starts fast: listing commands and asking for help load no heavy library.

Timings are benchmarks/cli.py's; here the deterministic cause is checked, in a fresh process:
``--help`` imports every command module, so one module that imports torch (or a stage's
``__init__`` that imports its modules) at the top makes every command slow to start.
"""
import json
import os
import subprocess
import sys

import pytest

#: Libraries that take seconds to import on a login node; a command imports them when it runs.
HEAVY = ("torch", "torchvision", "segment_anything", "deepspeed", "optuna", "zarr", "dask", "albumentations",
         "matplotlib", "submitit")

_LOADED_AFTER = """
import json, sys
from steelseg_hpc.cli import main
try:
    main({args!r}, prog_name="steelseg-hpc")
except SystemExit:
    pass
print(json.dumps(sorted(name for name in {heavy!r} if name in sys.modules)))
"""


@pytest.mark.parametrize("args", [["--help"], ["status", "--help"], ["sweep", "--help"], ["demo", "--help"],
                                  ["models", "--help"]], ids=" ".join)
def test_help_imports_no_heavy_library(args, tmp_path):
    code = _LOADED_AFTER.format(args=args, heavy=HEAVY)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "STEELSEG_INDEX": str(tmp_path / "index.sqlite")})
    assert done.returncode == 0, done.stderr
    assert "Usage: steelseg-hpc" in done.stdout
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_the_model_registry_is_complete_when_first_read_in_a_fresh_process():
    """The models package registers its zoo on first use, not on import: any name still sees all of it."""
    code = ("import json\nfrom steelseg_hpc.models import profile_zoo\nfrom steelseg_hpc import models\n"
            "print(json.dumps(models.list_models()))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    names = json.loads(done.stdout.strip().splitlines()[-1])
    assert {"unet3plus", "elunet", "sam-lora"} <= set(names), names

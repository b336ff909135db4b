"""Build hook: the wheel ships copies of the checkout's user-editable TOML files.

The top-level ``sweeps/``, ``launch/`` and ``data_prep/`` folders stay the one source in git (what
users edit, and where a project's files override shipped ones); building a wheel copies their TOML
files into ``steelseg_hpc/shipped/`` of the build, never into the source tree. An editable install
needs no copies: its package reads the checkout's files (``steelseg_hpc/core/shipped.py``).
"""
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

#: The folders whose ``*.toml`` files (at any depth: launch/experiments/) the wheel ships.
SHIPPED_FOLDERS = ("sweeps", "launch", "data_prep")


class BuildWithShippedDefaults(build_py):
    """``build_py`` that also copies the shipped TOML files into the built package."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        root = Path(__file__).parent
        for folder in SHIPPED_FOLDERS:
            for source in sorted((root / folder).glob("**/*.toml")):
                target = Path(self.build_lib, "steelseg_hpc", "shipped", source.relative_to(root))
                self.mkpath(str(target.parent))
                self.copy_file(str(source), str(target))


setup(cmdclass={"build_py": BuildWithShippedDefaults})

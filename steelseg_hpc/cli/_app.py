"""The root click group, the error policy every command shares, and lazy command modules.

Each command module registers its commands on :data:`main` when imported, and is imported only
when one of its commands runs (or ``--help`` lists them): ``steelseg-hpc status`` never loads
torch or DeepSpeed.
"""
from __future__ import annotations

import errno
import importlib
import logging
import sys

import click
from rich.console import Console
from rich.logging import RichHandler

from steelseg_hpc.core.errors import SteelsegError

# Messages are never broken across lines (logs and pipes are read by grep); tables still fit.
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

#: Command name -> the module of ``steelseg_hpc.cli`` that defines it.
COMMAND_MODULES = {
    "synth": "data", "prep": "data",
    "models": "models",
    "train": "train", "evaluate": "inference", "export": "inference",
    "launch": "launch", "status": "status", "logs": "control", "cancel": "control",
    "sweep": "sweep", "dashboard": "dashboard",
    "report": "report",
    "demo": "demo",
}


#: OS errors that are the machine's state, not a bug: a full or read-only disk, a missing right.
USER_OS_ERRORS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
                  errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
                  errno.EPERM: "operation not permitted", errno.ENOTDIR: "not a directory",
                  errno.EISDIR: "is a directory", errno.ENAMETOOLONG: "file name too long"}


def describe_os_error(exc: OSError) -> str | None:
    """One line for an OS error a user can fix (naming the file), else None."""
    if exc.errno not in USER_OS_ERRORS:
        return None
    where = exc.filename if exc.filename is not None else "a file"
    return f"{where}: {USER_OS_ERRORS[exc.errno]}"


class _Group(click.Group):
    """Reports user errors as one line and exit code 2 (never a traceback); loads commands lazily."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(COMMAND_MODULES))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.commands and name in COMMAND_MODULES:
            importlib.import_module(f"steelseg_hpc.cli.{COMMAND_MODULES[name]}")
        return super().get_command(ctx, name)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            # click would print the usage block and a hint first: one line names the command instead
            where = exc.ctx.command_path if exc.ctx is not None else ctx.command_path
            err_console.print(f"[bold red]error:[/] {exc.format_message()} (see {where} --help)",
                              highlight=False, soft_wrap=True)
            sys.exit(2)
        except SteelsegError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            sys.exit(2)
        except OSError as exc:
            message = describe_os_error(exc)
            if message is None:
                raise
            err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
            sys.exit(2)
        except KeyboardInterrupt:
            err_console.print("[bold red]interrupted[/]")
            sys.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.version_option(package_name="steelseg-hpc")
@click.pass_context
def main(ctx: click.Context, verbose: int) -> None:
    """Train and compare segmentation models on SEM images of steel, locally or on SLURM."""
    ctx.obj = {"verbose": verbose}
    level = logging.WARNING - 10 * min(verbose, 2)
    # The handler's own level keeps the package's INFO records (they go to train.log) off the
    # console unless -v: a run's progress is shown by its progress bar and epoch lines.
    handler = RichHandler(console=err_console, show_path=False, rich_tracebacks=False)
    handler.setLevel(level)
    logging.basicConfig(level=level, format="%(message)s", handlers=[handler])

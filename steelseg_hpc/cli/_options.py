"""Options several commands share, declared once so their names and help never drift apart."""
from __future__ import annotations

import click

index_option = click.option(
    "--index", "index_path", type=click.Path(dir_okay=False), default=None,
    help="Experiment index (default: $STEELSEG_INDEX or ~/.local/share/steelseg-hpc/index.sqlite).",
)

storage_option = click.option(
    "--storage", metavar="URL", default=None,
    help="Optuna storage: an RDB URL (postgresql://, mysql+pymysql://) or a journal file "
         "(default: what the sweep was run with, else runs/NAME/study.journal).",
)

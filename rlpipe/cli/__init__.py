"""rlpipe's command line. `rlpipe VERB ...` (the console script, and `python -m rlpipe`) dispatches to one
implementation per verb; `python launch.py ...` is `rlpipe train ...` (rlpipe.cli.train.main)."""

from rlpipe.cli.train import main
from rlpipe.cli.verbs import entry

__all__ = ["entry", "main"]

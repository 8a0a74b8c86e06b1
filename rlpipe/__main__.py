"""`python -m rlpipe VERB ...`: the same as the `rlpipe` console script."""

import sys

from rlpipe.cli import entry

if __name__ == "__main__":
    sys.exit(entry())

"""rlpipe entry point: compose the config with Hydra, resolve it, run the job. See `python launch.py --help`."""

import sys

from rlpipe.cli import main

if __name__ == "__main__":
    sys.exit(main())

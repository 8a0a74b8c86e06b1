"""What the run reads at its start (weights, checkpoints, tokenizers) failing as one clear error naming the file.

The config phase checks every file it can judge by its layout (`rlpipe.config.files`); what only the real load can
find (a truncated safetensors file, a corrupt checkpoint shard, a tokenizer that does not parse) surfaces here, and
the launcher prints it as one paragraph instead of a traceback from deep inside transformers or megatron.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path


class LoadError(RuntimeError):
    """A file the run needs could not be loaded; the message says which and why."""


@contextlib.contextmanager
def loading(what: str, path: str | Path) -> Iterator[None]:
    """Turn any failure while loading `what` from `path` into a LoadError naming both (the cause stays chained)."""
    try:
        yield
    except (LoadError, KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as err:  # torch's CheckpointException derives from BaseException, not Exception
        raise LoadError(
            f"could not load {what} from {path}: {_summary(err)}\n"
            "  the file is damaged or not what it claims to be: copy it again, or point the config elsewhere"
        ) from err


def _summary(err: BaseException) -> str:
    """The error in a line or two: a multi-line message (torch's CheckpointException carries each rank's
    traceback) shrinks to its first and last lines, the last being the underlying error."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    text = lines[0] if len(lines) <= 1 else f"{lines[0]} ... {lines[-1]}"
    return f"{type(err).__name__}: {text}"

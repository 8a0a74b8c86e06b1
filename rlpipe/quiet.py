"""Quiet third-party chatter in the processes that train or generate."""

from __future__ import annotations


def quiet_third_party() -> None:
    """Megatron warns once per module that TransformerEngine/Apex are absent (expected on CPU) and calls the
    torch.distributed collectives torch 2.13 renamed, and transformers draws a progress bar for every tiny
    save/load: keep the user's terminal for rlpipe's own."""
    import warnings

    warnings.filterwarnings("ignore", message=r".*(Transformer Engine|Apex).*not installed.*")
    warnings.filterwarnings("ignore", message=r".*full scope is deprecated.*")
    warnings.filterwarnings("ignore", message=r"`torch\.distributed\.\w+` is deprecated", category=FutureWarning)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

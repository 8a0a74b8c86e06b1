"""Quiet third-party chatter in the processes that train or generate."""

from __future__ import annotations


def quiet_third_party() -> None:
    """Megatron warns once per module that TransformerEngine/Apex are absent (expected on CPU) and calls the
    torch.distributed collectives and checkpoint APIs torch 2.13 renamed or deprecates, and transformers draws a
    progress bar for every tiny save/load: keep the user's terminal for rlpipe's own."""
    import warnings

    warnings.filterwarnings("ignore", message=r".*(Transformer Engine|Apex).*not installed.*")
    warnings.filterwarnings("ignore", message=r".*full scope is deprecated.*")
    warnings.filterwarnings("ignore", message=r"`torch\.distributed\.\w+` is deprecated", category=FutureWarning)
    # megatron 0.16 loads torch_dist checkpoints through torch APIs torch 2.13 deprecates; nothing a user can change.
    warnings.filterwarnings("ignore", message=r"`load_state_dict` is deprecated", category=FutureWarning)
    warnings.filterwarnings("ignore", message=r".*deprecating ShardedTensor", category=FutureWarning)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

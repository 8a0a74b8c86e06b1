"""Load a checkpoint's tokenizer and turn prompts into token ids the way every rlpipe component does.

Loaded with `PreTrainedTokenizerFast` from `tokenizer.json`, not `AutoTokenizer`: transformers 5's
AutoTokenizer may rebuild a byte-level BPE from a qwen2 folder's config and ignore the saved tokenizer.
Padding side is not saved with a tokenizer, so it is set here: left, as batched generation needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerFast

Prompt = str | list[dict[str, Any]]
SftExample = tuple[list[int], list[int], list[int]]  # (prompt ids, response ids, loss mask over the response)


def load_tokenizer(hf_checkpoint: str | Path) -> PreTrainedTokenizerFast:
    """The fast tokenizer saved in `hf_checkpoint` (a local folder), with left padding."""
    folder = Path(hf_checkpoint)
    if not folder.is_dir():
        raise FileNotFoundError(f"tokenizer folder {folder} does not exist")
    if not (folder / "tokenizer.json").is_file():
        present = sorted(p.name for p in folder.iterdir())
        raise FileNotFoundError(
            f"no tokenizer in {folder}: expected tokenizer.json (and tokenizer_config.json); the folder holds "
            f"{present}. Save one with tokenizer.save_pretrained({str(folder)!r})."
        )
    tok = PreTrainedTokenizerFast.from_pretrained(str(folder))
    tok.padding_side = "left"
    if tok.pad_token_id is None:
        # Padding positions are masked out, so any id works; EOS is the usual choice (Llama-style checkpoints).
        tok.pad_token = tok.eos_token
    return tok


@dataclass(frozen=True)
class Decoder:
    """`tokenizer.decode` as the Rust tokenizer does it, without transformers' per-token Python checks of the ids:
    ~5x faster, which matters at 8,192 responses per rollout (bench/rollout_manager.py). Falls back to
    `tokenizer.decode` when the tokenizer asks for transformers' clean-up of spaces, the one thing the wrapper adds.
    A class, not a closure, so it pickles (reward worker processes receive it in their RewardContext)."""

    tokenizer: PreTrainedTokenizerFast

    def __call__(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        if self.tokenizer.clean_up_tokenization_spaces:
            return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)
        return self.tokenizer.backend_tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)


def special_token_ids(tok: PreTrainedTokenizerFast) -> frozenset[int]:
    """Ids of all special tokens (pad, bos, eos, unk, extra specials)."""
    return frozenset(tok.all_special_ids)


def encode_prompt(
    tok: PreTrainedTokenizerFast, prompt: Prompt, apply_chat_template: bool, tools: list[Any] | None = None
) -> list[int]:
    """Token ids of a prompt, templated with the checkpoint's chat template (generation prompt appended).

    With templating on, a plain string becomes one user message; with it off, the prompt must be a string and is
    encoded as-is. `add_special_tokens=False` because the template already places bos/eos where it wants them.
    `tools` (functions or JSON schemas) are listed to the model by templates that describe tools (Qwen's system
    block); a multi-turn rollout passes its environment's tools.
    """
    return encode_prompts(tok, [prompt], apply_chat_template, tools)[0]


def encode_prompts(
    tok: PreTrainedTokenizerFast, prompts: list[Prompt], apply_chat_template: bool, tools: list[Any] | None = None
) -> list[list[int]]:
    """`encode_prompt` for many prompts at once: each is templated, then all are tokenized in one batched call of
    the fast tokenizer (Rust, on every core), which gives the same ids as one call per prompt, much faster."""
    texts = [_prompt_text(tok, prompt, apply_chat_template, tools) for prompt in prompts]
    if not texts:
        return []
    return tok(texts, add_special_tokens=False, return_attention_mask=False, return_token_type_ids=False)["input_ids"]


def _prompt_text(
    tok: PreTrainedTokenizerFast, prompt: Prompt, apply_chat_template: bool, tools: list[Any] | None = None
) -> str:
    """The text `encode_prompt` tokenizes: the templated prompt, or the plain string with templating off."""
    if apply_chat_template:
        if tok.chat_template is None:
            raise ValueError(f"the tokenizer from {tok.name_or_path!r} has no chat template; turn templating off")
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        return tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False, tools=tools)
    if isinstance(prompt, str):
        return prompt
    raise ValueError("a prompt given as chat messages needs apply_chat_template=True")


def encode_sft_pair(tok: PreTrainedTokenizerFast, prompt: Prompt, answer: str) -> tuple[list[int], list[int]]:
    """(prompt ids, response ids) for supervised warm-up: templated prompt, then the answer followed by EOS."""
    return encode_prompt(tok, prompt, apply_chat_template=True), [
        *tok.encode(answer, add_special_tokens=False),
        tok.eos_token_id,
    ]

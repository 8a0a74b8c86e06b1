"""Build a tiny Qwen2 (or Qwen3-MoE) checkpoint with a character tokenizer, offline, for the CPU demo and the tests.

The checkpoint is an ordinary HF folder (`config.json`, `model.safetensors`, `tokenizer.json`,
`tokenizer_config.json` with the chat template), so every code path that loads a real model loads this one.
The tokenizer has one token per character of a small alphabet: digits, the symbols the synthetic tasks use
(`rlpipe.data.tasks`) and the chat template's role letters, plus pad/bos/eos/unk.

Builds are cached and atomic: the folder holds `rlpipe_tiny_spec.json` (the spec and its hash); a folder built
from the same spec is reused, and a new build is written to a temporary sibling and renamed into place, so a
killed build never leaves a half checkpoint behind.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

# Bump when the vocabulary, template or config layout changes: it invalidates cached checkpoints.
FORMAT_VERSION = 1
SPEC_FILE = "rlpipe_tiny_spec.json"

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)
# digits; "+" "=" for the add task; "r" "c" task letters; "u" "a" "s" role letters and ":" for the template.
CHARACTERS = (*"0123456789", "+", "=", ":", "r", "c", "u", "a", "s")
VOCAB: tuple[str, ...] = (*SPECIAL_TOKENS, *CHARACTERS)
# The tool demo's extension (`tool_vocab`): "t" for the tool role, and the calculator call's fixed text as whole
# tokens, as a BPE trained on tool traces merges it (Qwen's vocabulary has <tool_call> and </tool_call> as single
# tokens too). What the model writes decodes to a standard Qwen/Hermes call: <tool_call>{"name": "calculator",
# "arguments": {"expression": "12+34"}}</tool_call>.
TOOL_WORDS = ("<tool_call>", "</tool_call>", '{"name": "calculator", "arguments": {"expression": "', '"}}')
TOOL_VOCAB: tuple[str, ...] = (*VOCAB, "t", *TOOL_WORDS)

# "<s>u:r123a:" for one user turn: bos, then per message its role's first letter, ":", the content, and eos
# after assistant turns (so SFT on templated conversations teaches the model to stop). No newlines: every
# template character is a token the tiny model has to read.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{{ m['role'][0] }}:{{ m['content'] }}"
    "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}a:{% endif %}"
)


@dataclass(frozen=True)
class TinyModelSpec:
    """Shape and seed of the tiny model: Qwen2 (defaults: ~77k parameters), or Qwen3-MoE with num_experts."""

    num_layers: int = 2
    hidden: int = 64
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 128
    rope_theta: float = 10000.0
    max_position_embeddings: int = 256
    seed: int = 0
    tie_word_embeddings: bool = False
    num_experts: int = 0  # > 0: a Qwen3-MoE (QK norm, every MLP a top-k mixture of SwiGLU experts)
    experts_per_token: int = 0
    expert_intermediate: int = 0
    tool_vocab: bool = False  # the tokenizer has the tool demo's tokens (TOOL_VOCAB)

    def digest(self) -> str:
        """Hash of the spec and FORMAT_VERSION: equal digests mean an interchangeable checkpoint (a dense spec
        hashes without the MoE fields, and one without tools without tool_vocab, so checkpoints built before
        those fields existed stay valid)."""
        fields = dataclasses.asdict(self)
        if not self.num_experts:
            fields = {k: v for k, v in fields.items() if k not in _MOE_FIELDS}
        if not self.tool_vocab:
            del fields["tool_vocab"]
        payload = json.dumps({"format": FORMAT_VERSION, **fields}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()


_MOE_FIELDS = ("num_experts", "experts_per_token", "expert_intermediate")


def build_tiny_checkpoint(path: Path, spec: TinyModelSpec) -> Path:
    """Write (or reuse) a tiny Qwen2 checkpoint with tokenizer at `path`; returns `path`.

    Raises FileExistsError if `path` is a non-empty folder that this function did not build.
    """
    path = Path(path)
    if _built_from(path, spec):
        return path
    if path.exists() and any(path.iterdir()) and not (path / SPEC_FILE).exists():
        raise FileExistsError(f"{path} exists and is not an rlpipe tiny checkpoint; refusing to overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    try:
        _write_checkpoint(tmp, spec)
        if not _built_from(path, spec):  # a concurrent builder may have finished meanwhile
            _replace_dir(tmp, path)
    except OSError:
        # A concurrent builder may have renamed its identical build into place first.
        if not _built_from(path, spec):
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def build_char_tokenizer(tool_vocab: bool = False) -> PreTrainedTokenizerFast:
    """The character-level tokenizer with the chat template, as a PreTrainedTokenizerFast; with `tool_vocab`,
    the tool demo's extension (TOOL_VOCAB)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = TOOL_VOCAB if tool_vocab else VOCAB
    backend = Tokenizer(models.WordLevel({tok: i for i, tok in enumerate(vocab)}, unk_token=UNK))
    # One pre-token per character (newlines included), then a word-level lookup; Fuse joins on decode.
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    if tool_vocab:  # matched before the per-character split; ordinary (not special) tokens, kept by decode
        backend.add_tokens([AddedToken(word, normalized=False, special=False) for word in TOOL_WORDS])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        chat_template=CHAT_TEMPLATE,
    )
    tok.padding_side = "left"
    return tok


def _write_checkpoint(folder: Path, spec: TinyModelSpec) -> None:
    import torch  # here, not at the top: the config phase reads this module's vocabulary without importing torch
    from transformers import AutoModelForCausalLM, Qwen2Config, Qwen3MoeConfig

    tok = build_char_tokenizer(spec.tool_vocab)
    shape = dict(
        vocab_size=len(tok),
        hidden_size=spec.hidden,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.kv_heads,
        intermediate_size=spec.intermediate,
        max_position_embeddings=spec.max_position_embeddings,
        rope_theta=spec.rope_theta,
        tie_word_embeddings=spec.tie_word_embeddings,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    if spec.num_experts:
        config = Qwen3MoeConfig(
            **shape,
            head_dim=spec.hidden // spec.heads,
            num_experts=spec.num_experts,
            num_experts_per_tok=spec.experts_per_token,
            moe_intermediate_size=spec.expert_intermediate,
            norm_topk_prob=True,
        )
    else:
        config = Qwen2Config(**shape)
    # fork_rng: the seed drives this init only; the caller's global RNG state is restored afterwards.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        model = AutoModelForCausalLM.from_config(config)
        if spec.num_experts:  # HF zero-initialises routers: every expert would tie for every token
            for name, param in model.named_parameters():
                if name.endswith("mlp.gate.weight"):
                    torch.nn.init.normal_(param, std=0.5)
    model.save_pretrained(folder)
    # save_jinja_files=False keeps the template inside tokenizer_config.json, where every loader looks.
    tok.save_pretrained(folder, save_jinja_files=False)
    spec_record = {"digest": spec.digest(), "format": FORMAT_VERSION, "spec": dataclasses.asdict(spec)}
    (folder / SPEC_FILE).write_text(json.dumps(spec_record, indent=2, sort_keys=True))


def _built_from(path: Path, spec: TinyModelSpec) -> bool:
    spec_file = path / SPEC_FILE
    if not spec_file.is_file():
        return False
    try:
        return json.loads(spec_file.read_text()).get("digest") == spec.digest()
    except (json.JSONDecodeError, AttributeError):
        return False


def _replace_dir(src: Path, dst: Path) -> None:
    """Rename `src` onto `dst`; a stale rlpipe build at `dst` is moved aside first and deleted after."""
    if dst.exists() and any(dst.iterdir()):
        stale = Path(tempfile.mkdtemp(dir=dst.parent, prefix=f".{dst.name}.stale-"))
        os.replace(dst, stale / "old")
        try:
            os.replace(src, dst)
        finally:
            shutil.rmtree(stale, ignore_errors=True)
    else:
        os.replace(src, dst)

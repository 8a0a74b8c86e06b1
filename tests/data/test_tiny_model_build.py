"""Tiny checkpoint maker and tokenizer loader: files, caching, atomicity, vocabulary and chat template."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from rlpipe.data.tiny_model import CHARACTERS, SPEC_FILE, VOCAB, TinyModelSpec, build_tiny_checkpoint
from rlpipe.data.tokenizer import encode_prompt, encode_sft_pair, load_tokenizer, special_token_ids

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "model", TinyModelSpec())


def test_checkpoint_loads_with_the_spec_shape(ckpt: Path) -> None:
    spec = TinyModelSpec()
    model = AutoModelForCausalLM.from_pretrained(ckpt)
    cfg = model.config
    assert cfg.model_type == "qwen2"
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads) == (2, 64, 4)
    assert (cfg.num_key_value_heads, cfg.intermediate_size, cfg.vocab_size) == (2, 128, len(VOCAB))
    assert cfg.tie_word_embeddings is False
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()
    assert json.loads((ckpt / SPEC_FILE).read_text())["digest"] == spec.digest()


def test_tokenizer_round_trip_and_specials(ckpt: Path) -> None:
    tok = load_tokenizer(ckpt)
    assert tok.padding_side == "left"
    assert len(tok) == len(VOCAB) <= 32
    text = "".join(CHARACTERS)
    ids = tok.encode(text, add_special_tokens=False)
    assert len(ids) == len(text)  # one token per character
    assert tok.unk_token_id not in ids
    assert tok.decode(ids) == text
    assert special_token_ids(tok) == frozenset({tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id})
    assert len(special_token_ids(tok)) == 4
    assert tok.decode([*ids[:3], tok.eos_token_id, tok.pad_token_id], skip_special_tokens=True) == text[:3]


def test_chat_template_uses_only_vocab_characters(ckpt: Path) -> None:
    tok = load_tokenizer(ckpt)
    text = tok.apply_chat_template([{"role": "user", "content": "r123"}], add_generation_prompt=True, tokenize=False)
    assert text == "<s>u:r123a:"
    ids = encode_prompt(tok, [{"role": "user", "content": "r123"}], apply_chat_template=True)
    assert tok.convert_ids_to_tokens(ids) == ["<s>", "u", ":", "r", "1", "2", "3", "a", ":"]
    assert ids == encode_prompt(tok, "r123", apply_chat_template=True)  # a string is one user message
    assert encode_prompt(tok, "r123", apply_chat_template=False) == ids[3:7]
    convo = [
        {"role": "system", "content": "c"},
        {"role": "user", "content": "r1"},
        {"role": "assistant", "content": "1"},
    ]
    full = tok.apply_chat_template(convo, tokenize=False)
    assert full == "<s>s:cu:r1a:1</s>"
    assert tok.unk_token_id not in tok.encode(full, add_special_tokens=False)


def test_sft_pair_ends_with_eos(ckpt: Path) -> None:
    tok = load_tokenizer(ckpt)
    prompt_ids, response_ids = encode_sft_pair(tok, [{"role": "user", "content": "r123"}], "321")
    assert tok.decode(prompt_ids) == "<s>u:r123a:"
    assert tok.convert_ids_to_tokens(response_ids) == ["3", "2", "1", "</s>"]


def test_build_is_cached_and_rebuilds_for_another_spec(tmp_path: Path) -> None:
    target = tmp_path / "m"
    build_tiny_checkpoint(target, TinyModelSpec())
    weights = target / "model.safetensors"
    first = weights.stat().st_mtime_ns, weights.stat().st_ino
    build_tiny_checkpoint(target, TinyModelSpec())
    assert (weights.stat().st_mtime_ns, weights.stat().st_ino) == first  # reused, not rewritten
    w0 = AutoModelForCausalLM.from_pretrained(target).lm_head.weight.clone()
    build_tiny_checkpoint(target, TinyModelSpec(seed=1))
    w1 = AutoModelForCausalLM.from_pretrained(target).lm_head.weight
    assert not torch.equal(w0, w1)
    assert json.loads((target / SPEC_FILE).read_text())["spec"]["seed"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temp or stale folders left behind


def test_same_seed_gives_identical_weights(tmp_path: Path) -> None:
    a = AutoModelForCausalLM.from_pretrained(build_tiny_checkpoint(tmp_path / "a", TinyModelSpec(seed=3)))
    b = AutoModelForCausalLM.from_pretrained(build_tiny_checkpoint(tmp_path / "b", TinyModelSpec(seed=3)))
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(pa, pb), name


def test_refuses_to_overwrite_a_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "user_model").mkdir()
    (tmp_path / "user_model" / "config.json").write_text("{}")
    with pytest.raises(FileExistsError, match="user_model"):
        build_tiny_checkpoint(tmp_path / "user_model", TinyModelSpec())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["user_model"]


def test_load_tokenizer_names_the_folder_without_tokenizer(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=rf"no tokenizer in {re.escape(str(tmp_path))}.*config\.json"):
        load_tokenizer(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_tokenizer(tmp_path / "missing")

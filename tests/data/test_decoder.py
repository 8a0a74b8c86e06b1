"""`Decoder`: the Rust tokenizer's decode, equal to `tokenizer.decode` wherever it takes the fast path, and
`tokenizer.decode` itself where transformers' space clean-up would change the text."""

from __future__ import annotations

import pickle
import random
from pathlib import Path

from tokenizers import Tokenizer, decoders
from tokenizers.models import WordPiece
from tokenizers.pre_tokenizers import WhitespaceSplit
from transformers import PreTrainedTokenizerFast

from rlpipe.data.tiny_model import TinyModelSpec, build_tiny_checkpoint
from rlpipe.data.tokenizer import Decoder, load_tokenizer


def test_the_fast_path_equals_tokenizer_decode(tmp_path: Path) -> None:
    tok = load_tokenizer(build_tiny_checkpoint(tmp_path / "tiny", TinyModelSpec()))
    assert not tok.clean_up_tokenization_spaces  # the fast path is the one taken
    decode, rng = Decoder(tok), random.Random(0)
    for _ in range(200):
        ids = [rng.randrange(len(tok)) for _ in range(rng.randint(0, 40))]
        for skip in (False, True):
            assert decode(ids, skip_special_tokens=skip) == tok.decode(ids, skip_special_tokens=skip)
    assert pickle.loads(pickle.dumps(decode))([5, 6, 7]) == tok.decode([5, 6, 7])  # reward workers receive it


def test_a_tokenizer_asking_for_space_clean_up_gets_it() -> None:
    vocab = {"[UNK]": 0, "hello": 1, ",": 2, "world": 3, "'s": 4, "it": 5, ".": 6}
    backend = Tokenizer(WordPiece(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer, backend.decoder = WhitespaceSplit(), decoders.WordPiece(cleanup=False)
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, clean_up_tokenization_spaces=True, unk_token="[UNK]")
    ids = [1, 2, 3, 4, 6]
    assert backend.decode(ids) == "hello , world 's ."  # what the Rust tokenizer alone gives
    assert Decoder(tok)(ids) == tok.decode(ids) == "hello, world's."

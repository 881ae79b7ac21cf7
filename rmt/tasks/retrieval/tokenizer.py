"""The retrieval task's own word-level tokenizer: key and value symbols, separators, specials.

Fixed (independent of the config's vocabulary sizes, which only choose how many symbols a run
draws from), so ids are identical on every machine and every run; it is saved next to every
checkpoint with ``save_pretrained`` anyway. Every symbol is one token and decoding joins tokens
with spaces, so the answer ``v12`` decodes to exactly ``v12``.
"""

from __future__ import annotations

import functools

from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

PAD, UNK, EOS = "<pad>", "<unk>", "<eos>"
PAIR_END, QUERY, FILLER = ";", "?", "_"
MAX_SYMBOLS = 256  # key_vocab and value_vocab may go up to this


def key(i: int) -> str:
    return f"k{i}"


def value(i: int) -> str:
    return f"v{i}"


def vocabulary() -> list[str]:
    """All tokens in id order: specials (0, 1, 2), separators, keys, values."""
    return [PAD, UNK, EOS, PAIR_END, QUERY, FILLER,
            *(key(i) for i in range(MAX_SYMBOLS)), *(value(i) for i in range(MAX_SYMBOLS))]  # fmt: skip


@functools.lru_cache(maxsize=1)
def _tokenizer_json() -> str:
    tok = Tokenizer(
        models.WordLevel(vocab={w: i for i, w in enumerate(vocabulary())}, unk_token=UNK)
    )
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return tok.to_str()


def build_tokenizer() -> PreTrainedTokenizerFast:
    """The tokenizer of ``task.type=retrieval`` (``<pad>``, ``<unk>``, ``<eos>`` specials)."""
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_tokenizer_json()),
        pad_token=PAD,
        unk_token=UNK,
        eos_token=EOS,
        clean_up_tokenization_spaces=False,
        model_max_length=1 << 62,  # RMT reads any length; no truncation warnings
    )

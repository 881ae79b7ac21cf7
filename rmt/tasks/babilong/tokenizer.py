"""Tokenizers: a word-level one built offline for the generated tasks, or a pretrained one.

The offline tokenizer lets everything (tests, the default training run) work without a
download. Its vocabulary is the closed set of words the task generator (all 20 bAbI tasks)
and the builtin background can produce, so nothing maps to ``<unk>`` and every answer word is one token. It
is built from sorted word lists, so ids are identical on every machine and run; it is saved
next to every checkpoint with ``save_pretrained`` anyway.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from rmt.tasks.babilong.background import builtin_vocabulary
from rmt.tasks.babilong.format import ANSWER_MARKER
from rmt.tasks.babilong.generators import vocabulary as generator_vocabulary

PAD, UNK, EOS = "<pad>", "<unk>", "<eos>"
SPECIAL_TOKENS = (PAD, UNK, EOS)  # ids 0, 1, 2

_PRE_TOKENIZER = pre_tokenizers.Sequence(
    [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation(behavior="isolated")]
)


def split_words(text: str) -> list[str]:
    """The word-level pieces ``text`` becomes (white space, then each punctuation mark)."""
    return [piece for piece, _ in _PRE_TOKENIZER.pre_tokenize_str(text)]


def tokenizer_words() -> list[str]:
    """The sorted vocabulary (without special tokens) of :func:`build_tokenizer`."""
    words = generator_vocabulary() | builtin_vocabulary() | set(split_words(ANSWER_MARKER))
    # also allow capitalised/lower-case variants of task words (sentence starts, user text)
    words |= {w.lower() for w in words} | {w[:1].upper() + w[1:] for w in words}
    return sorted(words)


def unknown_words(texts: Iterable[str], tokenizer: PreTrainedTokenizerBase) -> set[str]:
    """Words of ``texts`` that ``tokenizer`` maps to its unknown token (empty when none).

    Used to check, before training, that no fact, question or answer reads as ``<unk>``.
    """
    unk = tokenizer.unk_token_id
    if unk is None:  # byte-level tokenizers have no unknown token
        return set()
    words = {w for text in texts for w in split_words(text)}
    return {w for w in words if unk in tokenizer(w, add_special_tokens=False)["input_ids"]}


@functools.lru_cache(maxsize=8)
def _tokenizer_json(extra: tuple[str, ...] = ()) -> str:
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for word in tokenizer_words():
        vocab.setdefault(word, len(vocab))
    for word in extra:  # after the base words, so base ids never move
        vocab.setdefault(word, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = _PRE_TOKENIZER
    return tok.to_str()


def build_tokenizer(extra_texts: Iterable[str] = ()) -> PreTrainedTokenizerFast:
    """Word-level tokenizer for the offline tasks; ``<pad>``, ``<unk>``, ``<eos>`` specials.

    ``extra_texts`` (e.g. the sentences of local bAbI qa11..qa20 files) add their words after
    the base vocabulary, in sorted order. Decoding joins words with single spaces
    (``"apple , milk"``), which the BABILong scorer reads as intended.
    """
    extra = sorted({w for text in extra_texts for w in split_words(text)})
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_tokenizer_json(tuple(extra))),
        pad_token=PAD,
        unk_token=UNK,
        eos_token=EOS,
        clean_up_tokenization_spaces=False,
        model_max_length=1 << 62,  # RMT reads any length; no truncation warnings
    )


def load_tokenizer(name_or_path: str, **kwargs) -> PreTrainedTokenizerBase:
    """A pretrained (Hub or local) tokenizer; pad falls back to eos for causal LMs.

    Encoder tokenizers (BERT's) have a pad but no eos token, which is fine: only the generative
    samples end with eos (`format.format_example` checks that).
    """
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, **kwargs)
    if tokenizer.eos_token_id is None and tokenizer.pad_token_id is None:
        raise ValueError(
            f"tokenizer {name_or_path!r} has no eos token (and no pad token); samples end with "
            "eos, so set one (tokenizer.eos_token = ...) before training"
        )
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer

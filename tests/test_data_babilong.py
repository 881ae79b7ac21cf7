"""Haystack builder and formatting: exact length, facts in order inside their window, labels."""

from __future__ import annotations

import numpy as np
import pytest

from rmt.tasks.babilong.babi import BabiSample
from rmt.tasks.babilong.background import Background, make_background
from rmt.tasks.babilong.format import ANSWER_MARKER, IGNORE_INDEX, format_example
from rmt.tasks.babilong.generators import generate_sample
from rmt.tasks.babilong.haystack import HaystackBuilder, parse_length
from rmt.tasks.babilong.tokenizer import build_tokenizer


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


@pytest.fixture(scope="module")
def builder(tok):
    # a slice of the builtin background keeps the one-off tokenization fast in tests
    return HaystackBuilder(tok, Background(make_background("builtin").sentences[:3000]))


def find(haystack, needle):
    """All start offsets of ``needle`` in ``haystack``."""
    n = len(needle)
    return [i for i in range(len(haystack) - n + 1) if haystack[i : i + n] == needle]


def test_parse_length():
    assert parse_length("4k") == 4096
    assert parse_length("0k") == 0
    assert parse_length("1M") == 1_048_576
    assert parse_length("128K") == 131_072
    assert parse_length(" 512 ") == 512
    assert parse_length(300) == 300
    for bad in ("4kb", "-1", "", "1.5k", -3, True):
        with pytest.raises(ValueError):
            parse_length(bad)


@pytest.mark.parametrize("length", [100, 1000, "4k", 50_000])
def test_exact_length_and_facts_in_order(tok, builder, length):
    sample = generate_sample("qa2", 7, min_facts=8, max_facts=8)
    hay = builder.build(sample, length, seed=5)
    assert isinstance(hay.input_ids, np.ndarray) and hay.input_ids.dtype == np.int64
    assert len(hay.input_ids) == parse_length(length)
    ids = hay.input_ids.tolist()
    assert len(hay.fact_spans) == len(sample.facts)
    for (start, end), fact in zip(hay.fact_spans, sample.facts, strict=True):
        assert ids[start:end] == tok(f" {fact}", add_special_tokens=False)["input_ids"]
    starts = [s for s, _ in hay.fact_spans]
    ends = [e for _, e in hay.fact_spans]
    assert all(e <= s for e, s in zip(ends, starts[1:], strict=False))  # in order, no overlap
    # facts sit between background sentences: the token before a fact ends a sentence
    enders = {tok.convert_tokens_to_ids(p) for p in (".", "!")}
    for start, _ in hay.fact_spans:
        assert start == 0 or ids[start - 1] in enders


def test_same_seed_same_haystack_and_seed_changes_it(builder):
    sample = generate_sample("qa1", 3)
    a = builder.build(sample, 2000, seed=11)
    b = builder.build(sample, 2000, seed=11)
    c = builder.build(sample, 2000, seed=12)
    assert np.array_equal(a.input_ids, b.input_ids) and a.fact_spans == b.fact_spans
    assert not np.array_equal(a.input_ids, c.input_ids)


def test_short_lengths_give_just_the_facts(tok, builder):
    sample = generate_sample("qa1", 0, min_facts=3, max_facts=3)
    facts = tok(" " + " ".join(sample.facts), add_special_tokens=False)["input_ids"]
    for length in (0, "0k", 5):
        hay = builder.build(sample, length, seed=0)
        assert hay.input_ids.tolist() == facts
        assert hay.fact_spans[-1][1] == len(facts)
    # exactly the facts' size is also just the facts; one more token adds background
    assert len(builder.build(sample, len(facts) + 1, seed=0)) == len(facts) + 1


@pytest.mark.parametrize("position", [(0.0, 0.25), (0.5, 0.75), (0.9, 1.0), (0.3, 0.32)])
def test_facts_inside_the_position_window(builder, position):
    length = 8000
    for seed in range(5):
        sample = generate_sample("qa1", seed, min_facts=4, max_facts=6)
        hay = builder.build(sample, length, seed=seed, position=position)
        assert len(hay) == length
        for start, end in hay.fact_spans:
            assert start >= position[0] * length and end <= position[1] * length


def test_facts_end_bound(builder):
    sample = generate_sample("qa3", 1, min_facts=10, max_facts=10)
    for seed in range(5):
        hay = builder.build(sample, 3000, seed=seed, facts_end=1200)
        assert len(hay) == 3000
        assert max(end for _, end in hay.fact_spans) <= 1200
    with pytest.raises(ValueError, match="do not fit"):
        builder.build(sample, 3000, seed=0, facts_end=20)
    with pytest.raises(ValueError, match="position"):
        builder.build(sample, 3000, seed=0, position=(0.5, 0.5))


def test_long_haystack_wraps_the_background(builder):
    sample = generate_sample("qa1", 0)
    length = 3 * len(builder.flat) + 17  # longer than the background itself
    hay = builder.build(sample, length, seed=1)
    assert len(hay) == length
    assert all(e <= length for _, e in hay.fact_spans)


def test_builder_tokenizes_background_once_like_the_tokenizer(tok):
    bg = Background([f"The bell rang {w} times." for w in ("gladly", "softly") * 15])
    builder = HaystackBuilder(tok, bg)
    expected = [tok(f" {s}", add_special_tokens=False)["input_ids"] for s in bg.sentences]
    assert [ids.tolist() for ids in builder.sentence_ids] == expected
    assert builder.flat.tolist() == [t for ids in expected for t in ids]


def test_background_ignores_padding_and_truncation_in_the_tokenizer_file():
    """A tokenizer.json with padding and truncation on (sentence-transformers ship them, e.g.
    all-MiniLM-L6-v2 at 128) must not pad or cut background sentences: it once filled minilm's
    haystacks with [PAD] (one sentence, then pads, per 128 tokens)."""
    tok = build_tokenizer()
    bg = Background([f"The bell rang {w} times." for w in ("gladly", "softly") * 15])
    expected = HaystackBuilder(tok, bg).flat.tolist()
    padded = build_tokenizer()
    padded.backend_tokenizer.enable_padding(length=12, pad_id=tok.pad_token_id)
    padded.backend_tokenizer.enable_truncation(max_length=4)
    builder = HaystackBuilder(padded, bg)
    assert builder.flat.tolist() == expected
    assert tok.pad_token_id not in builder.flat.tolist()
    assert padded.backend_tokenizer.padding is not None  # the caller's tokenizer is untouched


def test_format_example_labels_and_prompt(tok):
    haystack = np.array(tok(" The bell rang.", add_special_tokens=False)["input_ids"])
    ex = format_example(tok, haystack, "What is Mary carrying?", "apple,milk")
    ids, labels, p = ex["input_ids"], ex["labels"], ex["prompt_length"]
    assert len(ids) == len(labels)
    answer = tok(" apple,milk", add_special_tokens=False)["input_ids"]
    assert ids[p:] == answer + [tok.eos_token_id]
    assert labels[:p] == [IGNORE_INDEX] * p and labels[p:] == ids[p:]
    assert ids[: len(haystack)] == haystack.tolist()
    assert tok.decode(ids[:p]).endswith("What is Mary carrying ? Answer :")
    assert tok.convert_ids_to_tokens(ids[p - 2 : p]) == ["Answer", ":"]
    prompt_only = format_example(tok, haystack, "What is Mary carrying?", "", with_answer=False)
    assert prompt_only["input_ids"] == ids[:p] and prompt_only["prompt_length"] == p
    assert set(prompt_only["labels"]) == {IGNORE_INDEX}
    assert ANSWER_MARKER == "Answer:"


def test_format_needs_an_eos(tok):
    class NoEos:
        eos_token_id = None

        def __call__(self, text, add_special_tokens=False):
            return tok(text, add_special_tokens=add_special_tokens)

    with pytest.raises(ValueError, match="eos"):
        format_example(NoEos(), [], "Where is Mary?", "kitchen")


def test_builder_with_given_samples(builder):
    sample = BabiSample("qa1", ("Mary moved to the kitchen.",), "Where is Mary?", "kitchen", (0,))
    hay = builder.build(sample, 64, seed=0)
    assert len(hay) == 64 and len(hay.fact_spans) == 1


def test_works_with_a_byte_level_bpe_tokenizer():
    """Nothing is word-level specific: a GPT-2-style BPE tokenizer gets the same guarantees."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    sentences = make_background("builtin").sentences[:1500]
    stories = [f for i in range(100) for f in generate_sample("qa1", i).facts]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(sentences + stories, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>")
    builder = HaystackBuilder(tok, Background(sentences))
    sample = generate_sample("qa1", 4, min_facts=4, max_facts=4)
    hay = builder.build(sample, 1500, seed=2)
    assert len(hay) == 1500
    for (start, end), fact in zip(hay.fact_spans, sample.facts, strict=True):
        assert tok.decode(hay.input_ids[start:end].tolist()) == f" {fact}"
    ex = format_example(tok, hay.input_ids, sample.question, sample.answer)
    p = ex["prompt_length"]
    assert tok.decode(ex["input_ids"][:p]).endswith(f" {sample.question} {ANSWER_MARKER}")
    assert tok.decode(ex["input_ids"][p:]) == f" {sample.answer}<|endoftext|>"

"""Offline word-level tokenizer: full coverage, stable ids, readable decodes, save/load."""

from __future__ import annotations

import re

import pytest

from rmt.tasks.babilong.background import make_background
from rmt.tasks.babilong.format import ANSWER_MARKER
from rmt.tasks.babilong.generators import TASKS, generate_sample
from rmt.tasks.babilong.scoring import compare_answers
from rmt.tasks.babilong.tokenizer import build_tokenizer, load_tokenizer, split_words, unknown_words


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def test_special_tokens_and_stable_ids(tok):
    assert (tok.pad_token, tok.unk_token, tok.eos_token) == ("<pad>", "<unk>", "<eos>")
    assert (tok.pad_token_id, tok.unk_token_id, tok.eos_token_id) == (0, 1, 2)
    again = build_tokenizer()
    assert again.get_vocab() == tok.get_vocab()
    assert (
        tok("Mary moved to the kitchen.")["input_ids"]
        == again("Mary moved to the kitchen.")["input_ids"]
    )
    assert tok("Mary", add_special_tokens=False)["input_ids"] != [tok.unk_token_id]


def test_covers_every_generated_task_and_the_builtin_background(tok):
    vocab = tok.get_vocab()
    texts = []
    for task in TASKS:
        for i in range(60):
            s = generate_sample(task, i, split=("train", "validation", "test")[i % 3])
            texts += [*s.facts, s.question, s.answer]
    texts.append(ANSWER_MARKER)
    missing = {w for t in texts for w in split_words(t) if w not in vocab}
    assert not missing
    bg = make_background("builtin")
    missing = {w for s in bg.sentences for w in split_words(s) if w not in vocab}
    assert not missing
    ids = tok(" ".join(bg.sentences[:500]), add_special_tokens=False)["input_ids"]
    assert tok.unk_token_id not in ids
    # and unknown words do map to <unk>, so the checks above can fail
    assert tok("Xylophone", add_special_tokens=False)["input_ids"] == [tok.unk_token_id]


def test_no_generated_answer_is_unknown(tok):
    answers = {generate_sample(task, i).answer for task in TASKS for i in range(150)}
    assert len(answers) > 45  # every task's labels, qa8's lists and qa19's paths
    assert not unknown_words(answers, tok)
    for answer in answers:
        assert tok.unk_token_id not in tok(f" {answer}", add_special_tokens=False)["input_ids"]
    # the helper does find unknown words, so the checks above can fail
    assert unknown_words(["Mary is a heron.", "quay"], tok) == {"heron", "quay"}


def test_decodes_are_readable_by_the_scorer(tok):
    for answer, task in (("kitchen", "qa1"), ("apple,milk", "qa8"), ("none", "qa7")):
        ids = tok(f" {answer}", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        text = tok.decode(ids, skip_special_tokens=True)
        assert compare_answers(answer, text, "What is Mary carrying?", task, scoring="strict"), text
    assert tok.decode(tok(" apple,milk", add_special_tokens=False)["input_ids"]) == "apple , milk"
    words = tok.tokenize("Where is Mary? Answer: kitchen")
    assert words == ["Where", "is", "Mary", "?", "Answer", ":", "kitchen"]
    assert re.fullmatch(
        r"Where is Mary \? Answer : kitchen",
        tok.decode(tok.encode("Where is Mary? Answer: kitchen")),
    )


def test_save_and_load_round_trip(tok, tmp_path):
    tok.save_pretrained(tmp_path / "tok")
    loaded = load_tokenizer(str(tmp_path / "tok"))
    assert loaded.get_vocab() == tok.get_vocab()
    assert loaded.eos_token_id == tok.eos_token_id and loaded.pad_token_id == tok.pad_token_id
    text = "Sandra grabbed the milk there. What is Sandra carrying?"
    assert loaded(text)["input_ids"] == tok(text)["input_ids"]


def test_load_tokenizer_sets_pad_from_eos(tok, tmp_path):
    tok.pad_token = None
    try:
        tok.save_pretrained(tmp_path / "nopad")
    finally:
        tok.pad_token = "<pad>"
    loaded = load_tokenizer(str(tmp_path / "nopad"))
    assert loaded.pad_token == "<eos>" and loaded.pad_token_id == tok.eos_token_id


def test_extra_texts_extend_the_vocabulary_without_moving_base_ids(tok):
    text = "The heron is west of the quay. How do you go from the kitchen to the quay? n,w"
    assert tok.unk_token_id in tok(text)["input_ids"]
    extended = build_tokenizer([text])
    assert tok.unk_token_id not in extended(text)["input_ids"]
    base = tok.get_vocab()
    assert all(extended.get_vocab()[w] == i for w, i in base.items())
    assert len(extended) == len(tok) + len({"heron", "quay"} - set(base)) == len(tok) + 2

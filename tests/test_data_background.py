"""Background sources: builtin grammar (free of task words), text files, HF datasets, errors."""

from __future__ import annotations

import json
import re

import pytest

from rmt.tasks.babilong.background import (
    FORBIDDEN_WORDS,
    MIN_SENTENCES,
    Background,
    BackgroundError,
    builtin_vocabulary,
    make_background,
    split_sentences,
)
from rmt.tasks.babilong.generators import OBJECTS, PEOPLE, QA5_PEOPLE, QA10_PEOPLE, ROOMS

TEXT = " ".join(f"The lamp number {i} was lit by the keeper. Was it bright?" for i in range(30))


def test_builtin_is_seeded_varied_and_free_of_task_words():
    bg = make_background("builtin", seed=0)
    assert make_background("builtin", seed=0).sentences == bg.sentences
    assert make_background("builtin", seed=1).sentences != bg.sentences
    assert len(set(bg.sentences)) > 0.9 * len(bg.sentences)
    words = {w.lower() for s in bg.sentences for w in re.findall(r"\w+", s)}
    task_words = {w.lower() for w in PEOPLE + QA5_PEOPLE + QA10_PEOPLE + ROOMS + OBJECTS}
    assert task_words <= FORBIDDEN_WORDS
    assert not words & FORBIDDEN_WORDS
    # enough text to fill long haystacks without repeating too soon (about 300k words)
    assert sum(len(s.split()) for s in bg.sentences) > 200_000
    assert all(s[0].isupper() and s[-1] in ".!" for s in bg.sentences[:1000])
    # every word it writes is in the declared vocabulary the tokenizer is built from
    pieces = {p for s in bg.sentences for p in re.findall(r"\w+|[^\w\s]", s)}
    assert pieces <= builtin_vocabulary()


def test_split_sentences():
    assert split_sentences('One day.  Two  days! Three?\n"Four." Five') == [
        "One day.",
        "Two days!",
        "Three?",
        '"Four."',
        "Five",
    ]


def test_files_source_file_and_folder(tmp_path):
    (tmp_path / "a.txt").write_text(TEXT, encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text(TEXT.replace("lamp", "bell"), encoding="utf-8")
    one = make_background("files", path=tmp_path / "a.txt")
    assert one.sentences[:2] == ["The lamp number 0 was lit by the keeper.", "Was it bright?"]
    both = make_background("files", path=tmp_path)
    assert len(both) == 2 * len(one)
    assert make_background("files", path=tmp_path, max_docs=1).sentences == one.sentences


def test_hf_source_from_a_local_saved_dataset(tmp_path):
    datasets = pytest.importorskip("datasets")
    data = datasets.Dataset.from_dict({"text": [TEXT, TEXT.upper()], "id": [1, 2]})
    data.save_to_disk(str(tmp_path / "single"))
    bg = make_background("hf", dataset=str(tmp_path / "single"))
    assert len(bg) == 120 and bg.sentences[0].startswith("The lamp")
    assert len(make_background("hf", dataset=str(tmp_path / "single"), max_docs=1)) == 60

    datasets.DatasetDict({"test": data}).save_to_disk(str(tmp_path / "dict"))
    assert len(make_background("hf", dataset=str(tmp_path / "dict"), split="test")) == 120
    with pytest.raises(BackgroundError, match="splits"):
        make_background("hf", dataset=str(tmp_path / "dict"), split="train")
    with pytest.raises(BackgroundError, match="column="):
        make_background("hf", dataset=str(tmp_path / "single"), column="body")


def test_hf_source_through_load_dataset_on_local_files(tmp_path):
    pytest.importorskip("datasets")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.jsonl").write_text(
        "\n".join(json.dumps({"text": TEXT}) for _ in range(2)), encoding="utf-8"
    )
    bg = make_background("hf", dataset=str(tmp_path / "data"))
    assert len(bg) == 120


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"kind": "files"}, "needs path"),
        ({"kind": "files", "path": "/nonexistent/books"}, "does not exist"),
        ({"kind": "hf"}, "needs dataset"),
        ({"kind": "wiki"}, "unknown background kind"),
    ],
)
def test_bad_sources_are_clear_errors(kwargs, needle):
    with pytest.raises(BackgroundError, match=needle):
        make_background(**kwargs)


def test_empty_and_too_short_sources(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(BackgroundError, match="no .txt files"):
        make_background("files", path=tmp_path / "empty")
    (tmp_path / "short.txt").write_text("Too short. Only three sentences. Really.")
    with pytest.raises(BackgroundError, match=f"at least {MIN_SENTENCES}"):
        make_background("files", path=tmp_path / "short.txt")
    (tmp_path / "blank.txt").write_text("   \n")
    with pytest.raises(BackgroundError, match="has 0 sentences"):
        make_background("files", path=tmp_path / "blank.txt")
    with pytest.raises(BackgroundError):
        Background([])

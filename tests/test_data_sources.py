"""Each data source reads what its name says (issue 13): bAbI files or one file, validation
held out of train by whole stories, story bounds filter real stories, preflight on every
source, malformed files stop rmt-train with file:line, and the tokenizer covers the data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import main_in_process, qa1_story
from omegaconf import OmegaConf

from rmt.errors import ConfigError
from rmt.tasks import build_task
from rmt.tasks.babilong import BabilongTask
from rmt.tasks.babilong.config import BabilongTaskConfig
from rmt.tasks.babilong.sources import babi_stories
from rmt.tasks.babilong.tokenizer import build_tokenizer


@pytest.fixture
def babi_dir(tmp_path: Path) -> Path:
    """qa1 train: 12 stories of 2..12 facts (1..6 questions each); test: 2 other stories."""
    folder = tmp_path / "en-10k"
    folder.mkdir()
    train = "".join(qa1_story(k, 2 + (k % 6) * 2) for k in range(12))
    (folder / "qa1_single-supporting-fact_train.txt").write_text(train)
    test = qa1_story(100, 4).replace("went to", "moved to") * 2
    (folder / "qa1_single-supporting-fact_test.txt").write_text(test)
    return folder


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def _task(tok, segment_size: int = 64, **fields):
    cfg = OmegaConf.merge(OmegaConf.structured(BabilongTaskConfig), fields)
    return build_task(cfg, tokenizer=tok, segment_size=segment_size, seed=0)


def _key(sample):
    return (sample.facts, sample.question)


def test_validation_is_held_out_of_train_by_whole_stories(babi_dir: Path):
    train = babi_stories(babi_dir, ["qa1"], "train", valid_samples=6)
    valid = babi_stories(babi_dir, ["qa1"], "validation", valid_samples=6)
    test = babi_stories(babi_dir, ["qa1"], "test", valid_samples=6)
    assert len(train) + len(valid) == 42 and 6 <= len(valid) <= 21  # 42 train-file questions
    assert not {_key(s) for s in train} & {_key(s) for s in valid}
    first_facts = {s.facts[0] for s in train}  # stories stay whole: no shared first fact
    assert not first_facts & {s.facts[0] for s in valid}
    assert all("moved to" in s.facts[0] for s in test)  # only the test split reads _test
    assert not any("moved to" in s.facts[0] for s in train + valid)
    # the split is a pure function of the file: the same stories every time
    assert babi_stories(babi_dir, ["qa1"], "validation", valid_samples=6) == valid


def test_one_file_is_a_source_too(babi_dir: Path):
    file = babi_dir / "qa1_single-supporting-fact_train.txt"
    train = babi_stories(file, ["qa1"], "train", valid_samples=6)
    assert train == babi_stories(babi_dir, ["qa1"], "train", valid_samples=6)
    with pytest.raises(FileNotFoundError, match="is not a qa2 file"):
        babi_stories(file, ["qa2"], "train", valid_samples=6)


def test_min_and_max_facts_filter_real_stories(tok, babi_dir: Path):
    task = _task(tok, source="babi", path=str(babi_dir), min_facts=4, max_facts=6,
                 curriculum=[{"segments": [2], "max_facts": 4}, {"segments": [2]}])  # fmt: skip
    for stage, high in ((0, 4), (1, 6)):
        ds = task.dataset("train", stage=stage, seed=0, num_samples=None)
        sizes = {len(ds.sample(i).facts) for i in range(len(ds))}
        assert sizes and min(sizes) >= 4 and max(sizes) <= high
        assert max(sizes) == high
    empty = _task(tok, source="babi", path=str(babi_dir), min_facts=30)
    with pytest.raises(
        ConfigError, match=r"keep none of the \d+ qa1 stories .* set task.min_facts=12 or less"
    ):
        empty.preflight()


def test_preflight_checks_real_stories_and_names_the_max_facts_that_fits(tok, babi_dir):
    _task(tok, source="babi", path=str(babi_dir)).preflight()  # 2 x 64 tokens: all fit
    small = _task(tok, segment_size=40, source="babi", path=str(babi_dir),
                  curriculum=[{"segments": [1]}])  # fmt: skip
    with pytest.raises(ConfigError) as err:
        small.preflight()
    message = str(err.value)
    assert "qa1 stories of task.path (up to 12 facts) do not fit" in message
    fits = int(message.split("task.max_facts=")[1].split()[0])
    small.cfg.max_facts = fits
    small.preflight()  # the suggested bound works


def test_preflight_checks_prebuilt_rows_against_the_curriculum(tok, tmp_path: Path):
    (tmp_path / "0k").mkdir()
    rows = [{"input": "Mary went to the kitchen. " * 12, "question": "Where is Mary?",
             "target": "kitchen"}] * 8  # fmt: skip
    (tmp_path / "0k" / "qa1.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = _task(tok, segment_size=32, source="babilong", path=str(tmp_path), valid_samples=2)
    with pytest.raises(ConfigError, match=r"longest pre-built row has \d+ tokens \(3 segments\); "
                                          r"set the stage's segments to \[3\]"):  # fmt: skip
        task.preflight()
    _task(tok, segment_size=32, source="babilong", path=str(tmp_path), valid_samples=2,
          curriculum=[{"segments": [3]}]).preflight()  # fmt: skip


def test_offline_tokenizer_covers_the_files_and_answers_are_checked(tmp_path: Path):
    text = "1 Zorro went to the cinema.\n2 Where is Zorro? \tcinema\t1\n"
    (tmp_path / "qa1_x_train.txt").write_text(text * 4)
    cfg = OmegaConf.merge(OmegaConf.structured(BabilongTaskConfig),
                          {"source": "babi", "path": str(tmp_path)})  # fmt: skip
    covering = BabilongTask.offline_tokenizer(cfg)
    words = "Zorro went to the cinema . Where is Zorro ?"
    assert covering.unk_token_id not in covering(words)["input_ids"]
    build_task(cfg, tokenizer=covering, segment_size=64, seed=0).preflight()
    plain = build_tokenizer()  # without the files' words "Zorro" is <unk>
    with pytest.raises(ConfigError, match=r"qa1 answers contain words the tokenizer reads as "
                                          r"<unk>: \['Zorro'\]"):  # fmt: skip
        text = text.replace("\tcinema\t", "\tZorro\t")
        (tmp_path / "qa1_x_train.txt").write_text(text * 4)
        build_task(cfg, tokenizer=plain, segment_size=64, seed=0).preflight()


MALFORMED = {
    "pipes": (
        "1 Mary went to the kitchen.\n2 Where is Mary?|kitchen|1\n",
        ":2: a question line without tabs",
        "separate question, answer and supporting numbers with tab",
    ),
    "spaces": (
        "1 Mary went to the kitchen.\n2 Where is Mary? kitchen 1\n",
        ":2: a question line without tabs",
        "tab characters",
    ),
    "empty": ("", ":1: no question line", "(it is empty)"),
    "binary": (b"\x89PNG\r\n\x1a\n\x00\x00", ":1: the file holds NUL bytes", "bAbI lines are"),
    "bad ids": (
        "1 Mary went to the kitchen.\n2 Where is Mary?\tkitchen\t7\n",
        ":2: supporting ids [7] are not fact lines",
        "this story",
    ),
    "bad numbering": (
        "1 Mary went to the kitchen.\n3 Where is Mary?\tkitchen\t1\n",
        ":2: line number 3 follows 1",
        "count up by one",
    ),
    "no number": ("Mary went to the kitchen.\n", ":1: expected '<number> <text>'", "bAbI lines"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_files_stop_rmt_train_with_file_line_and_fix(case, tmp_path, monkeypatch,
                                                               capsys):  # fmt: skip
    content, where, fix = MALFORMED[case]
    file = tmp_path / "qa1_single-supporting-fact_train.txt"
    file.write_bytes(content if isinstance(content, bytes) else content.encode())
    run = tmp_path / "run"
    code = main_in_process(monkeypatch, "debug=fast", "task.source=babi", f"task.path={tmp_path}",
                           f"hydra.run.dir={run}")  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0 and "Traceback" not in err  # one line
    assert f"{file}{where}" in err and fix in err
    assert not (run / "metrics.jsonl").exists()

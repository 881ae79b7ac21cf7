"""BABILong loader on local copies in every supported format (no network)."""

from __future__ import annotations

import json

import pytest

datasets = pytest.importorskip("datasets")

from rmt.tasks.babilong.dataset import BabilongTextDataset  # noqa: E402
from rmt.tasks.babilong.published import BabilongLoadError, load_babilong  # noqa: E402
from rmt.tasks.babilong.tokenizer import build_tokenizer  # noqa: E402

ROWS = [
    {
        "input": "The bell rang. Mary moved to the kitchen. The lamp was lit.",
        "question": "Where is Mary?",
        "target": "kitchen",
    },
    {
        "input": "Mary got the apple there. Mary took the milk there.",
        "question": "What is Mary carrying?",
        "target": "apple,milk",
    },
]


def rows_of(data):
    return [{k: data[i][k] for k in ("input", "question", "target")} for i in range(len(data))]


def test_json_jsonl_and_parquet_files(tmp_path):
    (tmp_path / "qa1.json").write_text(json.dumps(ROWS))
    (tmp_path / "qa1.jsonl").write_text("\n".join(json.dumps(r) for r in ROWS))
    datasets.Dataset.from_list(ROWS).to_parquet(str(tmp_path / "qa1.parquet"))
    for name in ("qa1.json", "qa1.jsonl", "qa1.parquet"):
        assert rows_of(load_babilong(tmp_path / name)) == ROWS


def test_folders_by_length_and_task(tmp_path):
    (tmp_path / "4k").mkdir()
    (tmp_path / "4k" / "qa2.jsonl").write_text("\n".join(json.dumps(r) for r in ROWS))
    (tmp_path / "0k").mkdir()
    (tmp_path / "0k" / "qa2.jsonl").write_text(json.dumps(ROWS[0]))
    assert rows_of(load_babilong(tmp_path, length="4k", task="qa2")) == ROWS
    assert rows_of(load_babilong(tmp_path, length="0k", task="qa2")) == ROWS[:1]
    assert len(load_babilong(tmp_path, length=4096, task="qa2")) == 2
    with pytest.raises(BabilongLoadError, match="qa5"):
        load_babilong(tmp_path, length="4k", task="qa5")


def test_save_to_disk_folders(tmp_path):
    data = datasets.Dataset.from_list(ROWS)
    datasets.DatasetDict({"qa1": data, "qa2": data.select([1])}).save_to_disk(
        str(tmp_path / "bl" / "8k")
    )
    assert rows_of(load_babilong(tmp_path / "bl", length="8k", task="qa2")) == ROWS[1:]
    data.save_to_disk(str(tmp_path / "single"))
    assert rows_of(load_babilong(tmp_path / "single", task="qa1")) == ROWS
    with pytest.raises(BabilongLoadError, match="splits"):
        load_babilong(tmp_path / "bl", length="8k", task="qa9")


def test_missing_columns_and_paths_are_clear(tmp_path):
    bad = [{"context": r["input"], "question": r["question"], "answer": r["target"]} for r in ROWS]
    (tmp_path / "qa1.jsonl").write_text("\n".join(json.dumps(r) for r in bad))
    with pytest.raises(BabilongLoadError, match=r"\['input', 'target'\]"):
        load_babilong(tmp_path / "qa1.jsonl")
    (tmp_path / "qa1.csv").write_text("a,b\n1,2\n")
    with pytest.raises(BabilongLoadError, match="unsupported"):
        load_babilong(tmp_path / "qa1.csv")
    with pytest.raises(BabilongLoadError, match="does not exist"):
        load_babilong("./no/such/folder")


def test_hub_name_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")

    def offline(*args, **kwargs):
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(BabilongLoadError, match="online"):
        load_babilong("RMT-team/babilong", length="4k", task="qa1")


def test_hub_call_uses_length_config_and_task_split(monkeypatch):
    calls = []

    def fake(name, config, split):
        calls.append((name, config, split))
        return datasets.Dataset.from_list(ROWS)

    monkeypatch.setattr(datasets, "load_dataset", fake)
    load_babilong("RMT-team/babilong", length="16k", task="qa3")
    assert calls == [("RMT-team/babilong", "16k", "qa3")]


def test_rows_are_formatted_like_generated_samples(tmp_path):
    tok = build_tokenizer()
    (tmp_path / "qa8.jsonl").write_text("\n".join(json.dumps(r) for r in ROWS))
    ds = BabilongTextDataset(load_babilong(tmp_path / "qa8.jsonl"), tok, task="qa8")
    item = ds[1]
    p = item["prompt_length"]
    text = ROWS[1]["input"]
    hay = tok(f" {text}", add_special_tokens=False)["input_ids"]
    assert item["input_ids"][: len(hay)] == hay
    assert tok.decode(item["input_ids"][p:], skip_special_tokens=True) == "apple , milk"
    assert tok.convert_ids_to_tokens(item["input_ids"][p - 2 : p]) == ["Answer", ":"]
    assert (item["task"], item["target"]) == ("qa8", "apple,milk")
    assert ds[1] == item  # cached ids give the same item
    with pytest.raises(ValueError, match="columns"):
        BabilongTextDataset([{"input": "x"}], tok, task="qa1")

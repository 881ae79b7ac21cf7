"""The associative-retrieval task (``task=retrieval``): samples, config rules, CLI end to end."""

from __future__ import annotations

import argparse
import json
import sys

import pytest
from helpers import FAST, REPO, compose_config, main_in_process
from omegaconf import OmegaConf

from rmt.config.schema import validate
from rmt.errors import ConfigError
from rmt.tasks.base import EvalCell, build_task
from rmt.tasks.retrieval.sample import Layout, RetrievalDataset
from rmt.tasks.retrieval.tokenizer import build_tokenizer

sys.path.insert(0, str(REPO / "scripts"))
import retrieval_capacity as rc  # noqa: E402

LAYOUT = Layout(num_pairs=7, pairs_per_segment=3, key_vocab=12, value_vocab=5, segment_size=10)


def _parse(tokenizer, sample: dict) -> tuple[list[list[str]], list[str], list[str]]:
    """(segments of the prompt as words, the query words, the answer words)."""
    words = tokenizer.convert_ids_to_tokens(sample["input_ids"])
    size = LAYOUT.segment_size
    prompt = words[: sample["prompt_length"]]
    segments = [words[i : i + size] for i in range(0, len(words), size)]
    return segments, prompt[-2:], words[sample["prompt_length"] :]


@pytest.mark.parametrize("segments", [4, 6])
def test_pairs_are_unique_and_the_answer_is_in_the_prefix_alone(segments):
    tok = build_tokenizer()
    dataset = RetrievalDataset(LAYOUT, split="train", num_samples=40, seed=3)
    queried = set()
    for index in range(len(dataset)):
        sample = dataset[(index, segments * LAYOUT.segment_size)]
        segs, query, answer = _parse(tok, sample)
        assert len(sample["input_ids"]) == segments * LAYOUT.segment_size  # full segments
        assert query[0] == "?" and answer == [sample["target"], "<eos>"]
        assert sample["labels"][: sample["prompt_length"]] == [-100] * sample["prompt_length"]
        pairs = {}
        for seg in segs[:-1]:  # every pair is whole inside one segment, none in the last
            body = [w for w in seg if w != "_"]
            assert len(body) % 3 == 0 and len(body) <= 3 * LAYOUT.pairs_per_segment
            for k, v, end in zip(body[::3], body[1::3], body[2::3], strict=True):
                assert k.startswith("k") and v.startswith("v") and end == ";"
                assert k not in pairs  # distinct keys
                pairs[k] = v
        assert len(pairs) == LAYOUT.num_pairs
        assert [w for w in segs[-1] if w.startswith("k")] == [query[1]]  # only the query key
        assert pairs[query[1]] == sample["target"]  # answerable from the earlier segments
        queried.add(list(pairs).index(query[1]))
    assert queried == set(range(LAYOUT.num_pairs))  # the query is spread over the pairs


def test_samples_are_a_function_of_seed_split_and_index():
    a = RetrievalDataset(LAYOUT, split="train", num_samples=4, seed=1)
    b = RetrievalDataset(LAYOUT, split="train", num_samples=4, seed=1)
    c = RetrievalDataset(LAYOUT, split="validation", num_samples=4, seed=1)
    assert a[(2, 40)] == b[(2, 40)] and a[(2, 40)]["input_ids"] != c[(2, 40)]["input_ids"]


def test_vary_pairs_fills_the_segments_a_batch_has_and_reverse_asks_for_keys():
    """vary_pairs: (segments - 1) x pairs_per_segment pairs, at most N; a reverse sample asks
    ``? v`` for its key (values distinct); about the asked fraction is reversed, by index."""
    layout = Layout(num_pairs=4, pairs_per_segment=1, key_vocab=16, value_vocab=16, segment_size=4)
    tok = build_tokenizer()
    data = RetrievalDataset(layout, split="train", num_samples=400, seed=0, vary_pairs=True,
                            reverse=0.5)  # fmt: skip
    reversed_count = 0
    for segments, pairs in ((2, 1), (3, 2), (5, 4), (7, 4)):
        for index in range(100):
            sample = data[(index, segments * 4)]
            words = tok.convert_ids_to_tokens(sample["input_ids"])
            assert len(words) == segments * 4 and sample["task"] == f"n{pairs}"
            keys, values = words[0 : 4 * pairs : 4], words[1 : 4 * pairs : 4]
            assert all(k.startswith("k") for k in keys) and all(v.startswith("v") for v in values)
            assert words[4 * pairs : -4] == ["_"] * (4 * (segments - pairs - 1))  # no more pairs
            asked, answer = words[-3], words[-2]
            if asked.startswith("v"):  # reverse: the key stored with that value
                reversed_count += 1
                assert len(set(values)) == pairs and keys[values.index(asked)] == answer
            else:
                assert values[keys.index(asked)] == answer
            assert sample["target"] == answer and sample["question"] == f"? {asked}"
    assert 150 < reversed_count < 250  # of 400
    plain = RetrievalDataset(layout, split="train", num_samples=4, seed=0)
    assert plain[(1, 8)]["task"] == "n4"  # without vary_pairs: always N (and enough segments)


def test_validation_asks_forward_only_and_training_asks_both(tmp_path):
    cfg = _retrieval("task.num_pairs=2", "task.pairs_per_segment=1", "segment.size=4",
                     "task.vary_pairs=true", "task.reverse_queries=0.5",
                     "task.curriculum=[{segments:[2,3]}]")  # fmt: skip
    validate(cfg)
    task = build_task(cfg.task, tokenizer=build_tokenizer(), segment_size=4, seed=0)
    for split, want in (("train", True), ("validation", False)):
        data = task.dataset(split, stage=0, seed=0, num_samples=200)
        asked = [data[(i, 12)]["question"].split()[1][0] for i in range(200)]
        assert ("v" in asked) is want and "k" in asked


def _retrieval(*overrides):
    return compose_config(["task=retrieval", "~experiment", *overrides])


@pytest.mark.parametrize(
    "overrides,named",
    [
        (["task.num_pairs=20", "task.key_vocab=16", "task.curriculum=[{segments:[6]}]"],
         "raise task.key_vocab to at least 20"),
        (["task.pairs_per_segment=30"], "lower task.pairs_per_segment to at most 21"),
        (["task.num_pairs=16"], "use segments >= 5"),
        (["task.curriculum=[{segments:[9],num_pairs:300}]", "task.key_vocab=256"],
         "raise task.key_vocab to at least 300"),
        (["task.value_vocab=1000"], "task.value_vocab=1000 must be in 1..256"),
        (["task.train_samples=2"], "smaller than trainer.batch_size"),
        (["backbone.tokenizer=gpt2"], "backbone.tokenizer=null"),
        (["task.reverse_queries=1.0"], "task.reverse_queries=1.0 must be in [0, 1"),
        (["task.reverse_queries=0.5", "task.value_vocab=4"], "raise task.value_vocab"),
        (["task.vary_pairs=true", "task.curriculum=[{segments:[1,3]}]"], "at least 2 segments"),
        (["task.vary_pairs=true", "task.num_pairs=16", "task.curriculum=[{segments:[2,3]}]"],
         "must hold all 16 pairs and the query"),
    ],
)  # fmt: skip
def test_impossible_retrieval_configs_fail_naming_the_fix(overrides, named):
    with pytest.raises(ConfigError, match=named.replace("[", r"\[").replace(".", r"\.")):
        validate(_retrieval(*overrides))


def test_eval_items_score_other_n_and_longer_inputs():
    cfg = _retrieval()
    task = build_task(cfg.task, tokenizer=build_tokenizer(), segment_size=64, seed=0)
    assert task.subtasks == ["n8"]
    task.check_subtasks(["n2", "n64"])
    with pytest.raises(ValueError, match="n<N>"):
        task.check_subtasks(["qa1"])
    short = list(task.eval_items(EvalCell("n16", "0k", 0), samples=3, seed=0))
    long = list(task.eval_items(EvalCell("n16", "1k", 1024), samples=3, seed=0))
    assert [len(it.prompt_ids) for it in short] == [5 * 64 - 2] * 3  # fewest segments
    assert [len(it.prompt_ids) for it in long] == [1024 - 2] * 3  # filler segments added
    assert task.judge(" v3 ", target="v3", question="? k1", task="n16").correct
    assert not task.judge("v3 v3", target="v3", question="? k1", task="n16").correct


@pytest.mark.parametrize("memory", ["default", "armt"])
def test_cli_trains_retrieval_and_rmt_eval_reads_the_run(tmp_path, monkeypatch, memory):
    """``rmt-train debug=fast task=retrieval [memory=armt]`` then ``rmt-eval checkpoint=<run>``."""
    run = tmp_path / "run"
    args = (*FAST, "task=retrieval", f"memory={memory}", f"hydra.run.dir={run}")
    assert main_in_process(monkeypatch, *args) == 0
    valid = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any(e["split"] == "valid" and "accuracy" in e for e in valid)
    saved = OmegaConf.load(run / "config.yaml")
    assert saved.task.type == "retrieval" and saved.memory.type == (
        "armt" if memory == "armt" else "tokens"
    )
    out = tmp_path / "eval"
    eval_args = (f"checkpoint={run}", "lengths=[0k]", "tasks=[n4,n8]", "samples=4",
                 f"hydra.run.dir={out}", "progress_bar=false")  # fmt: skip
    assert main_in_process(monkeypatch, *eval_args, cli="rmt-eval") == 0
    rows = json.loads((out / "results.json").read_text())["results"]
    assert sorted(r["task"] for r in rows) == ["n4", "n8"], rows
    assert all(r["n"] == 4 for r in rows), [(r["task"], r["n"]) for r in rows]


def test_capacity_script_commands_validate_and_report_pairs_runs(tmp_path):
    """scripts/retrieval_capacity.py: every run it launches is a valid config (one stage mixing
    1..N pairs by segment count), and the report puts RMT and ARMT side by side per N, in percent
    under a caption that says so (from summary.json files, as rmt-train writes them, in fractions)."""
    args = argparse.Namespace(pairs_per_segment=1, extra=[])
    for n, stages in (
        (1, [(None, [2])]),
        (2, [(None, [2, 3])]),
        (16, [(None, list(range(2, 18)))]),
    ):
        cmd = rc.command("armt", n, args, tmp_path / "run")
        cfg = compose_config([a for a in cmd[3:] if not a.startswith("hydra.")])
        validate(cfg)
        assert cfg.memory.type == "armt" and cfg.task.num_pairs == n
        assert [(s.num_pairs, list(s.segments)) for s in cfg.task.curriculum] == stages
    for memory, n, best in [("tokens", 2, 0.5), ("armt", 2, 0.75), ("tokens", 4, 0.3)]:
        (tmp_path / f"{memory}_n{n}").mkdir()
        summary = {"steps": 4, "best_metric": best, "best_step": 4, "final_accuracy": best - 0.05,
                   "minutes": 0.1, "stopped": "max_steps"}  # fmt: skip
        (tmp_path / f"{memory}_n{n}" / "summary.json").write_text(json.dumps(summary))
    found = rc.rows(tmp_path)
    assert [r["best_accuracy"] for r in found] == [0.75, 0.5, 0.3]  # fractions, as in the files
    lines = rc.table(found).splitlines()
    assert lines[0] == "validation accuracy in percent (0-100): best (final)"
    assert lines[4:] == ["| 2 | 50.0 (45.0) | 75.0 (70.0) | +25.0 | 4 / 4 | 0.1 / 0.1 |",
                         "| 4 | 30.0 (25.0) | - | - | 4 / - | 0.1 / - |"]  # fmt: skip

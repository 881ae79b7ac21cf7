"""rmt-eval end to end: a tiny checkpoint saved like the trainer does, scored by the real CLI."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from helpers import (
    checkout_env,
    main_in_process,
    make_checkpoint,
    python_module,
    run_eval_inprocess,
    snapshot,
)

from rmt.eval.results import read_csv


def _comparable(rows):
    return [{k: v for k, v in r.as_dict().items() if k != "seconds"} for r in rows]


pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("train") / "12-00-00_demo")


def run_cli(args: list[str], monkeypatch) -> None:
    """Call the real ``rmt-eval`` entrypoint (Hydra's main) in this process."""
    assert main_in_process(monkeypatch, *args, cli="rmt-eval") == 0


def test_cli_end_to_end(run_dir: Path, tmp_path: Path, monkeypatch, capsys):
    before = snapshot(run_dir)
    out = tmp_path / "eval"
    monkeypatch.chdir(tmp_path)
    run_cli(
        [
            f"checkpoint={run_dir}",
            "lengths=[0k,512]",
            "samples=3",
            "batch_size=2",
            "baseline=true",
            "progress_bar=false",
            f"hydra.run.dir={out}",
        ],
        monkeypatch,
    )
    stdout = capsys.readouterr().out
    # tasks come from the run's own config.yaml (qa1, qa2), not from a flag
    rows = read_csv(out / "results.csv")
    cells = {(r.mode, r.task, r.length) for r in rows}
    assert cells == {
        (m, t, n) for m in ("rmt", "baseline") for t in ("qa1", "qa2") for n in ("0k", "512")
    }
    assert len(rows) == 8
    for r in rows:
        assert r.n == 3 and r.model == "12-00-00_demo"
        assert r.accuracy == pytest.approx(r.correct / r.n)  # a fraction in the file
        assert r.length_tokens == {"0k": 0, "512": 512}[r.length]
        assert r.checkpoint == str(run_dir / "best")
        assert r.scoring == "babilong"  # the run's task.scoring (the default rule)
    payload = json.loads((out / "results.json").read_text())
    assert [row for row in payload["results"]] == [r.as_dict() for r in rows]
    assert payload["meta"]["models"][0]["step"] == 7
    assert payload["meta"]["models"][0]["baseline_window"] == 128
    assert payload["meta"]["models"][0]["scoring"] == "babilong"
    # the predictions file agrees with the table, cell by cell
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 8 * 3
    correct = Counter((p["mode"], p["task"], p["length"]) for p in preds if p["correct"])
    for r in rows:
        assert correct[(r.mode, r.task, r.length)] == r.correct
    assert {p["prompt_tokens"] > 512 for p in preds if p["length"] == "512"} == {True}
    for name in ("heatmap_12-00-00_demo.png", "heatmap_12-00-00_demo_baseline.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    md = (out / "results.md").read_text()
    assert "| 12-00-00_demo (baseline) | qa2 |" in md
    assert "12-00-00_demo (baseline)  qa1" in stdout  # the printed table
    # evaluation never writes into the checkpoint it reads
    assert snapshot(run_dir) == before

    # same seed in a second (in-process) run: identical samples, outputs and scores
    rows2 = run_eval_inprocess(
        [f"checkpoint={run_dir}/best", "lengths=[0k,512]", "samples=3", "batch_size=3",
         "baseline=true", "progress_bar=false"],
        tmp_path / "again",
    )  # fmt: skip
    assert _comparable(rows2) == _comparable(rows)
    preds2 = (tmp_path / "again" / "predictions.jsonl").read_text().splitlines()
    key = lambda p: (p["mode"], p["task"], p["length"], p["index"])  # noqa: E731
    assert sorted(map(json.loads, preds2), key=key) == sorted(preds, key=key)
    assert snapshot(run_dir) == before


def test_compare_checkpoints_and_seed(tmp_path: Path):
    a = make_checkpoint(tmp_path / "a" / "12-00-00", seed=1, tasks=("qa1",))
    b = make_checkpoint(tmp_path / "b" / "12-00-00", seed=2, tasks=("qa1",))
    out = tmp_path / "cmp"
    rows = run_eval_inprocess(
        [f"checkpoints=[{a},{b}]", "tasks=[qa3]", "lengths=[0k,256]", "samples=2",
         "progress_bar=false"],
        out,
    )  # fmt: skip
    # two runs share their folder name: the names are the shortest distinct path suffixes
    assert sorted({r.model for r in rows}) == ["a/12-00-00", "b/12-00-00"]
    assert {(r.task, r.length) for r in rows} == {("qa3", "0k"), ("qa3", "256")}
    assert (out / "heatmap_a_12-00-00.png").is_file() and (out / "heatmap_b_12-00-00.png").is_file()
    md = (out / "results.md").read_text().splitlines()
    assert md[0] == "accuracy as a fraction (0-1)"
    assert md[2] == "| model | task | 0k | 256 | mean |" and len(md) == 6
    # same stories for both checkpoints: the predictions file pairs them index by index
    preds = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    targets = {}
    for p in preds:
        targets.setdefault((p["length"], p["index"]), set()).add((p["target"], p["prompt_tokens"]))
    assert all(len(v) == 1 for v in targets.values())
    # another seed draws other stories
    rows_s1 = run_eval_inprocess(
        [f"checkpoint={a}", "tasks=[qa3]", "lengths=[256]", "samples=4", "seed=1",
         "progress_bar=false"],
        tmp_path / "s1",
    )  # fmt: skip
    preds_s1 = [
        json.loads(x) for x in (tmp_path / "s1" / "predictions.jsonl").read_text().splitlines()
    ]
    rows_s0 = run_eval_inprocess(
        [f"checkpoint={a}", "tasks=[qa3]", "lengths=[256]", "samples=4", "progress_bar=false"],
        tmp_path / "s0",
    )  # fmt: skip
    preds_s0 = [
        json.loads(x) for x in (tmp_path / "s0" / "predictions.jsonl").read_text().splitlines()
    ]
    assert rows_s1[0].n == rows_s0[0].n == 4
    assert [p["target"] for p in preds_s1] != [p["target"] for p in preds_s0] or [
        p["prompt_tokens"] for p in preds_s1
    ] != [p["prompt_tokens"] for p in preds_s0]


def test_babilong_source_reads_babilong_files(run_dir: Path, tmp_path: Path):
    root = tmp_path / "babilong"
    (root / "0k").mkdir(parents=True)
    rows = [
        {"input": "Mary went to the kitchen. John moved to the garden.", "question": "Where is Mary?", "target": "kitchen"},
        {"input": "Daniel went to the office.", "question": "Where is Daniel?", "target": "office"},
    ]  # fmt: skip
    (root / "0k" / "qa1.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "babilong_out"  # a local copy in the published format (or a Hub id)
    res = run_eval_inprocess(
        [f"checkpoint={run_dir}", "tasks=[qa1]", "lengths=[0k]", "samples=5",
         "data.source=babilong", f"data.path={root}", "progress_bar=false", "scoring=strict"],
        out,
    )  # fmt: skip
    assert len(res) == 1 and res[0].n == 2  # fewer rows than samples: all rows, n says so
    assert res[0].scoring == "strict" and read_csv(out / "results.csv")[0].scoring == "strict"
    preds = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert [p["target"] for p in preds] == ["kitchen", "office"]
    with pytest.raises(ValueError, match="found no BABILong data"):
        run_eval_inprocess(
            [f"checkpoint={run_dir}", "tasks=[qa2]", "lengths=[0k]", "samples=1",
             "data.source=babilong", f"data.path={root}", "progress_bar=false"],
            tmp_path / "missing",
        )  # fmt: skip


def test_babi_source_hides_babi_file_stories(run_dir: Path, tmp_path: Path):
    """data.source=babi: stories of the bAbI test files, hidden in the background at the length."""
    story = (
        "1 Mary moved to the bathroom.\n2 John went to the hallway.\n"
        "3 Where is Mary? \tbathroom\t1\n4 Daniel went back to the hallway.\n"
        "5 Sandra moved to the garden.\n6 Where is Daniel? \thallway\t4\n"
    )
    (tmp_path / "qa1_single-supporting-fact_test.txt").write_text(story)
    out = tmp_path / "babi_out"
    res = run_eval_inprocess(
        [f"checkpoint={run_dir}", "tasks=[qa1]", "lengths=[200]", "samples=5",
         "data.source=babi", f"data.path={tmp_path}", "data.split=test", "progress_bar=false"],
        out,
    )  # fmt: skip
    assert len(res) == 1 and res[0].n == 2  # the file holds two questions
    preds = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert [p["target"] for p in preds] == ["bathroom", "hallway"]
    assert all(p["prompt_tokens"] > 200 for p in preds)  # a 200-token haystack, then the question


def test_a_run_trained_on_babi_files_is_evaluated_on_their_test_file(tmp_path: Path):
    """Without data.source, rmt-eval reads the run's own source: its bAbI _test file with
    data.split=test (by default the run's validation stories, held out of its _train files)."""
    from omegaconf import OmegaConf

    folder = tmp_path / "babi"
    folder.mkdir()
    (folder / "qa1_single-supporting-fact_test.txt").write_text(
        "1 Sandra journeyed to the garden.\n2 Where is Sandra? \tgarden\t1\n"
    )
    run = make_checkpoint(tmp_path / "12-00-00_babi", tasks=("qa1",))
    for config in (run / "config.yaml", run / "best" / "config.yaml"):
        cfg = OmegaConf.load(config)
        cfg.task.source, cfg.task.path = "babi", str(folder)
        config.write_text(OmegaConf.to_yaml(cfg))
    out = tmp_path / "out"
    res = run_eval_inprocess(
        [f"checkpoint={run}", "lengths=[0k]", "samples=5", "data.split=test", "progress_bar=false"],
        out,
    )
    assert len(res) == 1 and res[0].n == 1  # the file's one question, not generated stories
    preds = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert [p["target"] for p in preds] == ["garden"]


@pytest.mark.slow
def test_console_script_subprocess(run_dir: Path, tmp_path: Path):
    """The installed ``rmt-eval`` command (a fresh process), as a user runs it."""
    env = checkout_env()
    out = tmp_path / "eval"
    cmd = [*python_module("rmt.cli.eval"), f"checkpoint={run_dir}", "tasks=[qa1]",
           "lengths=[0k]", "samples=2", "progress_bar=false", f"hydra.run.dir={out}"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(read_csv(out / "results.csv")) == 1 and "results:" in proc.stdout
    bad = subprocess.run(
        [*cmd[:3], f"checkpoint={tmp_path / 'nope'}"], capture_output=True, text=True, env=env
    )
    assert bad.returncode == 2
    assert "no such folder" in bad.stderr and "Traceback" not in bad.stderr


def test_sweep_jobs_are_named_by_their_overrides(tmp_path: Path):
    """Jobs of a multirun (folders 0, 1, ...) appear as the overrides that tell them apart."""
    jobs = []
    for num, mem in enumerate((0, 4)):
        job = make_checkpoint(tmp_path / "sweep" / str(num), tasks=("qa1",))
        (job / ".hydra" / "overrides.yaml").write_text(f"- debug=fast\n- memory.num_tokens={mem}\n")
        jobs.append(job)
    rows = run_eval_inprocess(
        [f"checkpoints=[{jobs[0]},{jobs[1]}]", "lengths=[0k]", "samples=1", "progress_bar=false"],
        tmp_path / "out",
    )
    assert [r.model for r in rows] == ["memory.num_tokens=0", "memory.num_tokens=4"]
    assert (tmp_path / "out" / "heatmap_memory.num_tokens_4.png").is_file()
    rows = run_eval_inprocess(
        [f"checkpoints=[{jobs[0]},{jobs[1]}]", "names=[small,big]", "lengths=[0k]",
         "samples=1", "progress_bar=false"],
        tmp_path / "named",
    )  # fmt: skip
    assert [r.model for r in rows] == ["small", "big"]
    rows = run_eval_inprocess(  # one job alone is still named by what its sweep varied
        [f"checkpoint={jobs[1]}", "lengths=[0k]", "samples=1", "progress_bar=false"],
        tmp_path / "one",
    )
    assert [r.model for r in rows] == ["memory.num_tokens=4"]


def _ngrams(ids: list[int], n: int) -> set[tuple[int, ...]]:
    return {tuple(ids[i : i + n]) for i in range(len(ids) - n + 1)}


def test_background_override(run_dir: Path, tmp_path: Path, monkeypatch):
    """background.kind/path replace the run's background; the stories stay the same."""
    from rmt.tasks import generative
    from rmt.tasks.babilong.tokenizer import build_tokenizer

    words = "the a ship sea wind calm grey stone road long old city river bright night".split()
    text = " ".join(
        " ".join(words[(i * 7 + j) % len(words)] for j in range(9)).capitalize() + "."
        for i in range(60)
    )
    (tmp_path / "bg.txt").write_text(text)
    prompts: list[list[int]] = []  # every prompt the model reads, as token ids
    generate = generative.generate_answers

    def spy(model, batch, **kwargs):
        prompts.extend(p.tolist() for p in batch)
        return generate(model, batch, **kwargs)

    monkeypatch.setattr(generative, "generate_answers", spy)
    common = [f"checkpoint={run_dir}", "tasks=[qa1]", "lengths=[128]", "samples=2",
              "progress_bar=false"]  # fmt: skip
    run_eval_inprocess(common, tmp_path / "builtin")
    builtin, prompts[:] = list(prompts), []
    run_eval_inprocess(
        [*common, "background.kind=files", f"background.path={tmp_path / 'bg.txt'}"],
        tmp_path / "files",
    )
    meta = json.loads((tmp_path / "files" / "results.json").read_text())["meta"]
    assert meta["config"]["background"]["kind"] == "files"

    # the haystack is bg.txt: every prompt holds a run of 8 of its tokens, the builtin ones none
    tok = build_tokenizer()
    from_file = _ngrams(tok(text, add_special_tokens=False)["input_ids"], 8)
    assert len(prompts) == len(builtin) == 2
    assert all(_ngrams(p, 8) & from_file for p in prompts)
    assert not any(_ngrams(p, 8) & from_file for p in builtin)

    def targets(name):
        lines = (tmp_path / name / "predictions.jsonl").read_text().splitlines()
        return [json.loads(x)["target"] for x in lines]

    assert targets("files") == targets("builtin")  # same stories in another haystack

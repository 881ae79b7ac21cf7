"""rmt-eval end to end: a tiny checkpoint saved like the trainer does, scored by the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import rmt
from rmt import RMTConfig, RMTForCausalLM
from rmt.data.tokenizer import build_tokenizer
from rmt.eval.results import read_csv
from rmt.modeling.backbones import tiny_backbone_config

REPO = Path(__file__).resolve().parents[1]


def make_checkpoint(
    run_dir: Path,
    *,
    seed: int = 0,
    tasks=("qa1", "qa2"),
    segment_size: int = 64,
    num_mem_tokens: int = 4,
    max_positions: int = 128,
    state: dict | None = None,
) -> Path:
    """A run folder as rmt-train leaves it: config.yaml, .hydra/, best/ (model, tokenizer, ...)."""
    from rmt.config.schema import TrainConfig
    from rmt.train.checkpoint import save_best

    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    bb = tiny_backbone_config(
        "llama",
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_layers=1,
        num_heads=2,
        max_positions=max_positions,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = RMTForCausalLM(
        RMTConfig(backbone_config=bb, num_mem_tokens=num_mem_tokens, segment_size=segment_size)
    )
    cfg = OmegaConf.structured(TrainConfig)
    cfg.task.tasks = list(tasks)
    cfg.output_dir = str(run_dir)
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text("[]\n")
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    full_state = {"rmt_version": rmt.__version__, "step": 7, "best_metric": 0.25}
    full_state.update(state or {})
    save_best(run_dir / "best", model=model, tokenizer=tokenizer, cfg=cfg, state=full_state)
    return run_dir


def snapshot(folder: Path) -> dict:
    """Every file under ``folder`` with its size and modification time."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
    }


def compose_eval(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    import rmt.config.schema  # noqa: F401
    from rmt.eval.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "rmt" / "conf"), version_base="1.3"):
        return compose(config_name="eval", overrides=overrides)


def run_eval_inprocess(overrides: list[str], out: Path):
    from rmt.eval.evaluate import run_eval

    cfg = compose_eval(overrides)
    cfg.output_dir = str(out)
    return run_eval(cfg)


def _comparable(rows):
    return [{k: v for k, v in r.as_dict().items() if k != "seconds"} for r in rows]


pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("train") / "12-00-00_demo")


def run_cli(args: list[str], monkeypatch) -> None:
    """Call the real ``rmt-eval`` entrypoint (Hydra's main) in this process."""
    from rmt.cli import eval as eval_cli

    monkeypatch.setattr(sys, "argv", ["rmt-eval", *args])
    eval_cli.main()


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
        assert r.accuracy == pytest.approx(100 * r.correct / r.n)
        assert r.length_tokens == {"0k": 0, "512": 512}[r.length]
        assert r.checkpoint == str(run_dir / "best")
    payload = json.loads((out / "results.json").read_text())
    assert [row for row in payload["results"]] == [r.as_dict() for r in rows]
    assert payload["meta"]["models"][0]["step"] == 7
    assert payload["meta"]["models"][0]["baseline_window"] == 128
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
    assert md[0] == "| model | task | 0k | 256 | mean |" and len(md) == 4
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


def test_local_and_hub_sources_read_babilong_files(run_dir: Path, tmp_path: Path):
    root = tmp_path / "babilong"
    (root / "0k").mkdir(parents=True)
    rows = [
        {"input": "Mary went to the kitchen. John moved to the garden.", "question": "Where is Mary?", "target": "kitchen"},
        {"input": "Daniel went to the office.", "question": "Where is Daniel?", "target": "office"},
    ]  # fmt: skip
    (root / "0k" / "qa1.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for source in ("local", "hub"):  # hub ids also accept a local copy in the same format
        out = tmp_path / source
        res = run_eval_inprocess(
            [f"checkpoint={run_dir}", "tasks=[qa1]", "lengths=[0k]", "samples=5",
             f"data.source={source}", f"data.path={root}", "progress_bar=false"],
            out,
        )  # fmt: skip
        assert len(res) == 1 and res[0].n == 2  # fewer rows than samples: all rows, n says so
        preds = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
        assert [p["target"] for p in preds] == ["kitchen", "office"]
    with pytest.raises(ValueError, match="found no BABILong data"):
        run_eval_inprocess(
            [f"checkpoint={run_dir}", "tasks=[qa2]", "lengths=[0k]", "samples=1",
             "data.source=local", f"data.path={root}", "progress_bar=false"],
            tmp_path / "missing",
        )  # fmt: skip


@pytest.mark.slow
def test_console_script_subprocess(run_dir: Path, tmp_path: Path):
    """The installed ``rmt-eval`` command (a fresh process), as a user runs it."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    out = tmp_path / "eval"
    cmd = [sys.executable, "-m", "rmt.cli.eval", f"checkpoint={run_dir}", "tasks=[qa1]",
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


def test_background_override(run_dir: Path, tmp_path: Path):
    """background.kind/path replace the run's background; the stories stay the same."""
    words = "the a ship sea wind calm grey stone road long old city river bright night".split()
    text = " ".join(
        " ".join(words[(i * 7 + j) % len(words)] for j in range(9)).capitalize() + "."
        for i in range(60)
    )
    (tmp_path / "bg.txt").write_text(text)
    common = [f"checkpoint={run_dir}", "tasks=[qa1]", "lengths=[128]", "samples=2",
              "progress_bar=false"]  # fmt: skip
    run_eval_inprocess(common, tmp_path / "builtin")
    run_eval_inprocess(
        [*common, "background.kind=files", f"background.path={tmp_path / 'bg.txt'}"],
        tmp_path / "files",
    )
    meta = json.loads((tmp_path / "files" / "results.json").read_text())["meta"]
    assert meta["config"]["background"]["kind"] == "files"

    def preds(name):
        lines = (tmp_path / name / "predictions.jsonl").read_text().splitlines()
        return [json.loads(x)["target"] for x in lines]

    assert preds("files") == preds("builtin")

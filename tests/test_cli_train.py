"""The real ``rmt-train`` CLI: a pre-empted run (SIGTERM), its resume, and rmt-eval on it.

The CLI runs as a subprocess once (``python -m rmt.cli.train`` of this checkout; it must receive
a real SIGTERM); the other invocations call the same Hydra ``main`` in this process, because
every interpreter start costs seconds of torch + transformers imports. One run folder is shared
by the module. Signals at chosen steps and exact resume are in test_train_signals.py.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import checkout_env, main_in_process, python_module

from rmt.run import resolve_checkpoint


def _steps(run: Path, split: str) -> list[int]:
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [e["step"] for e in events if e["split"] == split]


@dataclass
class Preempted:
    """What the pre-empted run left, read before any other test touches its folder."""

    root: Path
    run: Path
    code: int
    out: str
    state: dict  # last/trainer_state.json
    train_steps: list[int]
    had_summary: bool


@pytest.fixture(scope="module")
def preempted(tmp_path_factory) -> Preempted:
    """``rmt-train debug=fast`` with no step limit, stopped by SIGTERM once it saved last/."""
    root = tmp_path_factory.mktemp("cli")
    run = root / "run"
    log = root / "out.txt"
    with log.open("w") as out:  # a file, not a pipe: a full pipe would block the child
        proc = subprocess.Popen(
            [*python_module("rmt.cli.train"), "debug=fast", f"hydra.run.dir={run}",
             "trainer.max_steps=100000", "trainer.eval_every=3", "trainer.progress_bar=false"],
            cwd=root, env=checkout_env(), stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    # the condition the test needs: a validation ran and last/ holds a complete checkpoint
    deadline = time.monotonic() + 300  # a hang guard only; a loaded machine is slow
    while resolve_checkpoint(run / "last") is None and proc.poll() is None:
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            pytest.fail(f"no checkpoint after 300 s:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)
    assert proc.poll() is None, log.read_text()[-3000:]
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=300)
    return Preempted(
        root=root, run=run, code=code, out=log.read_text(),
        state=json.loads((run / "last" / "trainer_state.json").read_text()),
        train_steps=_steps(run, "train"), had_summary=(run / "summary.json").exists(),
    )  # fmt: skip


def test_sigterm_saves_last_and_exits(preempted):
    p = preempted
    assert p.code == 128 + signal.SIGTERM, p.out[-3000:]
    assert p.state["step"] >= 3 and p.state["step"] == p.train_steps[-1]
    assert (p.run / "best").is_dir() and (p.run / ".hydra" / "config.yaml").is_file()
    assert not p.had_summary
    assert f"resume with: rmt-train resume={p.run}" in p.out


@pytest.fixture(scope="module")
def resumed(preempted):
    root, run = preempted.root, preempted.run
    stopped_at = preempted.state["step"]
    with pytest.MonkeyPatch.context() as mp:
        code = main_in_process(mp, f"resume={run}", f"trainer.max_steps={stopped_at + 2}")
    return root, run, stopped_at, code


def test_resume_continues_the_run_in_its_folder(resumed):
    _, run, stopped_at, code = resumed
    assert code == 0
    steps = _steps(run, "train")
    assert steps == list(range(1, stopped_at + 3))  # no gap, no replayed step
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == stopped_at + 2 and summary["stopped"] == "max_steps"
    assert summary["scoring"] == "babilong"  # the rule behind its accuracies
    assert list((run / ".hydra").glob("resume-*/overrides.yaml"))  # original .hydra kept
    assert "debug=fast" in (run / ".hydra" / "overrides.yaml").read_text()
    assert "summary" in (run / "train.log").read_text()


def test_rmt_eval_reads_what_rmt_train_wrote(resumed, monkeypatch):
    root, run, _, _ = resumed
    out_dir = root / "eval"
    args = (f"checkpoint={run}", "lengths=[0k]", "samples=4", f"hydra.run.dir={out_dir}",
            "progress_bar=false")  # fmt: skip
    assert main_in_process(monkeypatch, *args, cli="rmt-eval") == 0
    assert (out_dir / "results.json").is_file()


def test_existing_run_folder_is_refused(resumed, monkeypatch, capsys):
    root, run, _, _ = resumed
    before = sorted(p.stat().st_mtime_ns for p in (run / ".hydra").iterdir() if p.is_file())
    metrics = (run / "metrics.jsonl").read_text()
    assert main_in_process(monkeypatch, "debug=fast", f"hydra.run.dir={run}") == 2
    err = capsys.readouterr().err
    assert "never overwritten" in err and f"resume={run}" in err
    assert (run / "metrics.jsonl").read_text() == metrics
    after = sorted(p.stat().st_mtime_ns for p in (run / ".hydra").iterdir() if p.is_file())
    assert after == before  # Hydra's own files of the run were not rewritten either


def test_impossible_config_fails_before_training_with_the_fix(tmp_path, monkeypatch, capsys):
    import logging

    handlers = list(logging.getLogger().handlers)
    run = tmp_path / "run"
    picks = ("segment.size=250", "backbone.max_positions=256", f"hydra.run.dir={run}")
    assert main_in_process(monkeypatch, *picks) == 2
    err = capsys.readouterr().err
    assert "segment.size=250" in err and "lower segment.size to 236" in err
    assert not (run / "metrics.jsonl").exists()
    # Hydra's job logging (console + train.log handlers) is gone again: left in place, its
    # handlers outlive this test's capture stream and break every later log call
    assert logging.getLogger().handlers == handlers


def test_cfg_job_prints_the_config_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the default run folder would be under ./outputs
    code = main_in_process(monkeypatch, "--cfg", "job", "debug=fast", "memory.num_tokens=7")
    assert code == 0
    printed = capsys.readouterr().out
    assert "num_tokens: 7" in printed and "max_steps: 4" in printed  # composed: debug + override
    assert "hydra:" not in printed  # the job's config only
    assert list(tmp_path.iterdir()) == []  # no run folder, no outputs/


def test_cli_returns_the_best_metric_for_sweepers(monkeypatch):
    """What Hydra's launcher hands an optimising sweeper: ``main``'s return value."""
    from omegaconf import OmegaConf

    from rmt.cli import train as train_cli
    from rmt.train import trainer

    task_function = train_cli.main.__wrapped__  # what Hydra's run_job calls
    metrics = {"best_metric": 0.75, "final_accuracy": 0.5, "final_loss": 1.25, "steps": 9}
    monkeypatch.setattr(train_cli, "run_config", lambda cfg: cfg)
    monkeypatch.setattr(trainer, "train", lambda cfg: metrics)
    assert task_function(OmegaConf.create({})) == 0.75
    metrics.update(signal=int(signal.SIGINT), stopped="preempted")
    with pytest.raises(SystemExit) as stop:
        task_function(OmegaConf.create({}))
    assert stop.value.code == 128 + signal.SIGINT


def test_armt_trains_and_evaluates_from_one_switch(tmp_path, monkeypatch):
    """``rmt-train debug=fast memory=armt`` runs end to end, saves an ARMT checkpoint that
    describes itself, and ``rmt-eval checkpoint=<run>`` reads it with no other flag."""
    run = tmp_path / "armt"
    code = main_in_process(
        monkeypatch,
        "debug=fast",
        "memory=armt",
        f"hydra.run.dir={run}",
        "trainer.progress_bar=false",
    )
    assert code == 0
    saved = json.loads((resolve_checkpoint(run / "best") / "config.json").read_text())
    assert saved["memory_type"] == "armt" and saved["memory_options"]["nu"] == 3
    out_dir = tmp_path / "eval"
    args = (f"checkpoint={run}", "lengths=[0k]", "samples=4", f"hydra.run.dir={out_dir}",
            "progress_bar=false")  # fmt: skip
    assert main_in_process(monkeypatch, *args, cli="rmt-eval") == 0
    results = json.loads((out_dir / "results.json").read_text())
    assert "armt" in json.dumps(results)

"""The real ``rmt-train`` CLI: a pre-empted run (SIGTERM), its resume, and rmt-eval on it.

The console script runs as a subprocess once (it must receive a real SIGTERM); the other
invocations call the same Hydra ``main`` in this process, because every interpreter start
costs seconds of torch + transformers imports. One run folder is shared by the module.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HYDRA_FULL_ERROR": "0"}


def _cli(name: str) -> list[str]:
    """The installed console script, or its module when the package is not installed."""
    exe = shutil.which(name)
    module = {"rmt-train": "rmt.cli.train", "rmt-eval": "rmt.cli.eval"}[name]
    return [exe] if exe else [sys.executable, "-m", module]


def _steps(run: Path, split: str) -> list[int]:
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [e["step"] for e in events if e["split"] == split]


def _main_in_process(monkeypatch, *args: str, cli: str = "rmt-train") -> int:
    """Run a CLI's real ``main`` in this process (no new interpreter: no import cost)."""
    import importlib

    module = importlib.import_module(
        {"rmt-train": "rmt.cli.train", "rmt-eval": "rmt.cli.eval"}[cli]
    )
    monkeypatch.setattr(sys, "argv", [cli, *args])
    try:
        module.main()
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


@pytest.fixture(scope="module")
def preempted(tmp_path_factory):
    """``rmt-train debug=fast`` with no step limit, stopped by SIGTERM after it logged."""
    root = tmp_path_factory.mktemp("cli")
    run = root / "run"
    proc = subprocess.Popen(
        [*_cli("rmt-train"), "debug=fast", f"hydra.run.dir={run}", "trainer.max_steps=100000",
         "trainer.eval_every=3", "trainer.progress_bar=false"],
        cwd=root, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    deadline = time.time() + 180
    metrics = run / "metrics.jsonl"
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and '"split": "valid"' in metrics.read_text():
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()[0][-3000:]
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    return root, run, proc.returncode, out


def test_sigterm_saves_last_and_exits(preempted):
    _, run, code, out = preempted
    assert code == 128 + signal.SIGTERM, out[-3000:]
    state = json.loads((run / "last" / "trainer_state.json").read_text())
    assert state["step"] >= 3 and state["step"] == _steps(run, "train")[-1]
    assert (run / "best").is_dir() and (run / ".hydra" / "config.yaml").is_file()
    assert not (run / "summary.json").exists()
    assert "resume with: rmt-train resume=" in out


@pytest.fixture(scope="module")
def resumed(preempted):
    root, run, _, _ = preempted
    stopped_at = json.loads((run / "last" / "trainer_state.json").read_text())["step"]
    with pytest.MonkeyPatch.context() as mp:
        code = _main_in_process(mp, f"resume={run}", f"trainer.max_steps={stopped_at + 2}")
    return root, run, stopped_at, code


def test_resume_continues_the_run_in_its_folder(resumed):
    _, run, stopped_at, code = resumed
    assert code == 0
    steps = _steps(run, "train")
    assert steps == list(range(1, stopped_at + 3))  # no gap, no replayed step
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == stopped_at + 2 and summary["stopped"] == "max_steps"
    assert list((run / ".hydra").glob("resume-*/overrides.yaml"))  # original .hydra kept
    assert "debug=fast" in (run / ".hydra" / "overrides.yaml").read_text()
    assert "summary" in (run / "train.log").read_text()


def test_rmt_eval_reads_what_rmt_train_wrote(resumed, monkeypatch):
    root, run, _, _ = resumed
    out_dir = root / "eval"
    args = (f"checkpoint={run}", "lengths=[0k]", "samples=4", f"hydra.run.dir={out_dir}",
            "progress_bar=false")  # fmt: skip
    assert _main_in_process(monkeypatch, *args, cli="rmt-eval") == 0
    assert (out_dir / "results.json").is_file()


def test_existing_run_folder_is_refused(resumed, monkeypatch, capsys):
    root, run, _, _ = resumed
    before = sorted(p.stat().st_mtime_ns for p in (run / ".hydra").iterdir() if p.is_file())
    metrics = (run / "metrics.jsonl").read_text()
    assert _main_in_process(monkeypatch, "debug=fast", f"hydra.run.dir={run}") == 2
    err = capsys.readouterr().err
    assert "never overwritten" in err and f"resume={run}" in err
    assert (run / "metrics.jsonl").read_text() == metrics
    after = sorted(p.stat().st_mtime_ns for p in (run / ".hydra").iterdir() if p.is_file())
    assert after == before  # Hydra's own files of the run were not rewritten either


def test_impossible_config_fails_before_training_with_the_fix(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    assert _main_in_process(monkeypatch, "segment.size=250", f"hydra.run.dir={run}") == 2
    err = capsys.readouterr().err
    assert "segment.size=250" in err and "lower segment.size to 236" in err
    assert not (run / "metrics.jsonl").exists()

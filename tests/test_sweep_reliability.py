"""Sweeps (issue 14, item 9): every job is validated before the first trains, a failed job is
recorded and the sweep goes on (or stops with ``sweep.fail_fast=true``), ``rmt-report`` lists
every job as done, failed (with the reason) or not started, and ``resume=<multirun folder>``
finishes an interrupted sweep. The real ``rmt-train -m`` main runs in this process."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from helpers import FAST, main_in_process, snapshot

from rmt.cli import report as report_cli
from rmt.tasks.text import builtin_sentences

FAST_SWEEP = ["--multirun", *FAST, "trainer.max_steps=2"]


def _sweep_folder(root: Path) -> Path:
    (sweep,) = (root / "outputs" / "multirun").glob("*/*")
    return sweep


def _report(sweep: Path) -> list[dict]:
    report_cli.run([str(sweep)])
    with (sweep / "report" / "report.csv").open() as f:
        return list(csv.DictReader(f))


def test_a_bad_job_refuses_the_sweep_before_any_job_trains(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main_in_process(monkeypatch, *FAST_SWEEP, "memory.num_tokens=4,40") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "sweep job 1 (" in err and "memory.num_tokens=40" in err and "No job was started" in err
    assert list(tmp_path.iterdir()) == []  # no multirun folder, no job trained


def test_a_failed_job_is_recorded_and_the_sweep_goes_on(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "no_text").mkdir()  # exists (passes validation), holds no .txt: fails at build
    args = [*FAST_SWEEP, "task.background.kind=files,builtin",
            f"task.background.path={tmp_path / 'no_text'}"]  # fmt: skip
    assert main_in_process(monkeypatch, *args) == 0
    sweep = _sweep_folder(tmp_path)
    failed = json.loads((sweep / "0" / "failed.json").read_text())
    assert "task.background: no .txt files" in failed["reason"]
    assert json.loads((sweep / "1" / "summary.json").read_text())["steps"] == 2
    rows = _report(sweep)
    assert [(r["job"], r["status"]) for r in rows] == [("0", "failed"), ("1", "done")]
    assert "no .txt files" in rows[0]["reason"]


def test_fail_fast_stops_the_sweep_and_resume_finishes_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    text = tmp_path / "text"
    text.mkdir()
    args = [*FAST_SWEEP, "task.background.kind=builtin,files,builtin", f"task.background.path={text}",
            "sweep.fail_fast=true"]  # fmt: skip
    assert main_in_process(monkeypatch, *args) == 2
    assert "sweep job 1 failed" in capsys.readouterr().err
    sweep = _sweep_folder(tmp_path)
    rows = _report(sweep)
    assert [(r["job"], r["status"]) for r in rows] == [
        ("0", "done"), ("1", "failed"), ("2", "not started"),
    ]  # fmt: skip
    done = snapshot(sweep / "0")

    (text / "book.txt").write_text(" ".join(builtin_sentences(0, 200)))  # the cause is fixed
    assert main_in_process(monkeypatch, f"resume={sweep}") == 0
    assert snapshot(sweep / "0") == done  # the finished job was skipped
    for num in ("1", "2"):
        assert json.loads((sweep / num / "summary.json").read_text())["steps"] == 2
    assert not (sweep / "1" / "failed.json").exists()
    rows = _report(sweep)
    assert [r["status"] for r in rows] == ["done", "done", "done"]
    assert [r.get("task.background.kind") for r in rows] == ["builtin", "files", "builtin"]


def test_report_writes_nothing_before_refusing_a_bad_argument(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main_in_process(monkeypatch, *FAST_SWEEP, "trainer.seed=0,1") == 0
    sweep = _sweep_folder(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        report_cli.main([str(sweep), "--x", "foo"])
    assert exit_.value.code == 2 and not (sweep / "report").exists()

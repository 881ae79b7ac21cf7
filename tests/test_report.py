"""rmt-report on sweep folders: hand-made ones shaped like `rmt-train -m` output (every case,
cheap), and one real `rmt-train -m` sweep."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import pytest
import yaml
from helpers import checkout_env, python_module

from rmt.cli import report as report_cli
from rmt.sweep import report as sweep


def _make_job(
    root: Path,
    num: int,
    overrides: list[str],
    accs: list[float] | None,
    summary: dict | None,
    *,
    broken_tail: bool = False,
) -> Path:
    job = root / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (job / ".hydra" / "config.yaml").write_text("seed: 0\n")
    (job / "config.yaml").write_text("seed: 0\n")
    lines = []
    for i, acc in enumerate(accs or []):
        step = 10 * (i + 1)
        lines.append(json.dumps({"step": step, "split": "train", "loss": 2.0 - i, "lr": 1e-3}))
        lines.append(json.dumps({"step": step, "split": "valid", "accuracy": acc, "loss": 3.0 - i}))
    text = "\n".join(lines) + ("\n" if lines else "")
    if broken_tail:
        text += '{"step": 99, "spl'
    (job / "metrics.jsonl").write_text(text)
    if summary is not None:
        (job / "summary.json").write_text(json.dumps(summary))
    return job


@pytest.fixture
def sweep_dir(tmp_path: Path) -> Path:
    root = tmp_path / "multirun" / "2026-01-01" / "12-00-00"
    specs = [
        (["memory.num_tokens=0", "segment.size=64", "trainer.max_steps=30"], [0.20, 0.18, 0.21]),
        (["memory.num_tokens=5", "segment.size=64", "trainer.max_steps=30"], [0.30, 0.55, 0.50]),
        (["memory.num_tokens=10", "segment.size=64", "trainer.max_steps=30"], [0.40, 0.80, 0.90]),
        (["memory.num_tokens=0", "segment.size=128", "trainer.max_steps=30"], [0.19, 0.22, 0.20]),
        (["memory.num_tokens=5", "segment.size=128", "trainer.max_steps=30"], [0.35, 0.60, 0.70]),
    ]
    for num, (ovr, accs) in enumerate(specs):
        summary = {
            "best_metric": max(accs),
            "metric_name": "valid/accuracy",
            "steps": 30,
            "minutes": 1.5 + num,
        }
        _make_job(root, num, ovr, accs, summary)
    # a job that crashed: no summary, half a line at the end of metrics.jsonl
    _make_job(
        root,
        10,
        ["memory.num_tokens=10", "segment.size=128", "trainer.max_steps=30"],
        [0.33],
        None,
        broken_tail=True,
    )
    (root / "multirun.yaml").write_text("hydra: {}\n")
    return root


def test_collect_keeps_only_swept_overrides(sweep_dir: Path):
    rep = sweep.collect(sweep_dir)
    assert rep.swept == ["memory.num_tokens", "segment.size"]
    assert rep.common == {"trainer.max_steps": 30}
    # jobs sorted numerically: 10 comes after 4, not after 1
    assert [r["job"] for r in rep.records] == ["0", "1", "2", "3", "4", "10"]
    by_job = {r["job"]: r for r in rep.records}
    assert by_job["2"]["memory.num_tokens"] == 10 and by_job["2"]["segment.size"] == 64
    assert by_job["2"]["best_metric"] == 0.90
    # best of metrics.jsonl: max for accuracy, min for loss, train split ignored
    assert by_job["1"]["best_valid_accuracy"] == 0.55
    assert by_job["1"]["best_valid_loss"] == 1.0
    assert "best_train_loss" not in rep.columns
    assert by_job["1"]["steps"] == 30 and by_job["1"]["minutes"] == 2.5
    # the crashed job stays, marked, with what its metrics.jsonl holds
    assert by_job["10"]["status"] == "incomplete"
    assert by_job["10"]["best_valid_accuracy"] == 0.33
    assert by_job["10"]["best_metric"] is None
    assert by_job["10"]["steps"] == 10
    assert sweep.default_metric(rep) == "best_metric"


def test_report_cli_writes_csv_markdown_plot(sweep_dir: Path, capsys):
    paths = report_cli.run([str(sweep_dir)])
    out = sweep_dir / "report"
    assert paths["csv"] == out / "report.csv"
    with (out / "report.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6
    assert rows[2]["memory.num_tokens"] == "10" and float(rows[2]["best_metric"]) == 0.90
    md = (out / "report.md").read_text()
    assert "trainer.max_steps=30" in md  # shared override listed once, above the table
    assert md.count("\n| ") == 7  # header + 6 jobs
    png = paths["plot"]
    assert png.name == "report_best_metric.png" and png.read_bytes()[:4] == b"\x89PNG"
    printed = capsys.readouterr().out
    assert "| job | status | memory.num_tokens | segment.size |" in printed


def test_report_metric_and_x_options(sweep_dir: Path, tmp_path: Path):
    out = tmp_path / "rep"
    paths = report_cli.run(
        [str(sweep_dir), "--metric", "best_valid_loss", "--x", "segment.size", "--out", str(out)]
    )
    assert paths["plot"] == out / "report_best_valid_loss.png"
    with pytest.raises(ValueError, match="not a column"):
        report_cli.run([str(sweep_dir), "--metric", "nope", "--out", str(out)])
    with pytest.raises(ValueError, match="not a swept override"):
        report_cli.run([str(sweep_dir), "--x", "lr", "--out", str(out)])


def test_report_errors_name_the_problem(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="not a folder"):
        sweep.collect(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no Hydra job folder"):
        sweep.collect(tmp_path / "empty")
    bad = tmp_path / "bad"
    _make_job(bad, 0, ["a=1"], [1.0], None)
    (bad / "0" / "summary.json").write_text("{not json")
    with pytest.raises(ValueError, match="summary.json is not valid JSON"):
        sweep.collect(bad)
    damaged = tmp_path / "damaged"
    job = _make_job(damaged, 0, ["a=1"], [1.0, 2.0], None)
    lines = (job / "metrics.jsonl").read_text().splitlines()
    lines[1] = "garbage"
    (job / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"metrics.jsonl:2 is not a JSON object"):
        sweep.collect(damaged)


def test_report_main_exit_code(tmp_path: Path, capsys):
    with pytest.raises(SystemExit) as exc:
        report_cli.main([str(tmp_path / "nowhere")])
    assert exc.value.code == 2
    assert "not a folder" in capsys.readouterr().err


def test_parse_override_types():
    assert sweep.parse_override("memory.num_tokens=10") == ("memory.num_tokens", 10)
    assert sweep.parse_override("+experiment=babilong") == ("experiment", "babilong")
    assert sweep.parse_override("optim.lr=1e-3") == ("optim.lr", 1e-3)
    assert sweep.parse_override("task.lengths=[1,2]") == ("task.lengths", "[1,2]")


# ------------------------------------------------------------------ a real `rmt-train -m` sweep
@pytest.fixture(scope="module")
def real_sweep(tmp_path_factory) -> tuple[Path, list[dict]]:
    """``rmt-train -m debug=fast memory.num_tokens=0,4``: two 4-step jobs, in a subprocess.

    A Hydra callback (tests/train_probe.py) records what each job's task function returned,
    which is what an optimising sweeper (Optuna, Nevergrad, Ax) receives.
    """
    root = tmp_path_factory.mktemp("sweep")
    sweep_dir = root / "multirun"
    cmd = [*python_module("rmt.cli.train"), "-m", "debug=fast", "memory.num_tokens=0,4",
           "trainer.progress_bar=false", f"hydra.sweep.dir={sweep_dir}",
           "+hydra.callbacks.record._target_=train_probe.RecordReturn"]  # fmt: skip
    proc = subprocess.run(
        cmd, cwd=root, env=checkout_env(RMT_PROBE_OUT=str(root)), capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    returns = [json.loads(line) for line in (root / "returns.jsonl").read_text().splitlines()]
    return sweep_dir, returns


def test_report_on_a_real_sweep(real_sweep, capsys):
    sweep_dir, _ = real_sweep
    paths = report_cli.run([str(sweep_dir)])
    rep = sweep.collect(sweep_dir)
    assert rep.swept == ["memory.num_tokens"]
    assert rep.common == {"debug": "fast", "trainer.progress_bar": False}
    assert [r["job"] for r in rep.records] == ["0", "1"]
    assert [r["status"] for r in rep.records] == ["done", "done"]
    assert [r["memory.num_tokens"] for r in rep.records] == [0, 4]
    for record in rep.records:
        job = sweep_dir / record["job"]
        summary = json.loads((job / "summary.json").read_text())
        valid = [json.loads(x) for x in (job / "metrics.jsonl").read_text().splitlines()]
        valid = [e for e in valid if e["split"] == "valid"]
        assert record["steps"] == summary["steps"] == 4
        assert record["best_metric"] == summary["best_metric"]
        # the trainer's "valid" events are read: best accuracy (max) and loss (min)
        assert record["best_valid_accuracy"] == max(e["accuracy"] for e in valid)
        assert record["best_valid_loss"] == min(e["loss"] for e in valid)
    assert "best_train_loss" not in rep.columns
    with (paths["csv"]).open() as f:
        assert [row["memory.num_tokens"] for row in csv.DictReader(f)] == ["0", "4"]
    assert paths["plot"].read_bytes()[:4] == b"\x89PNG"
    assert "| job | status | memory.num_tokens |" in capsys.readouterr().out


def test_sweep_jobs_return_their_best_metric_to_the_sweeper(real_sweep):
    sweep_dir, returns = real_sweep
    assert [(r["job"], r["status"]) for r in returns] == [(0, "COMPLETED"), (1, "COMPLETED")]
    for r in returns:
        summary = json.loads((sweep_dir / str(r["job"]) / "summary.json").read_text())
        assert isinstance(r["value"], float) and r["value"] == summary["best_metric"]

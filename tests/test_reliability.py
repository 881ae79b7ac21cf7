"""Reliability of the run folder (issue 14): runs never share a folder, ``+key`` typos are refused,
re-resuming a finished run changes nothing, and refused commands leave no files behind."""

from __future__ import annotations

import errno
import json
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
from helpers import FAST, checkout_env, compose_config, main_in_process, python_module, snapshot
from omegaconf import OmegaConf

from rmt import run as run_module
from rmt.config.schema import typed, validate
from rmt.errors import ConfigError
from rmt.run import CheckpointError, claim_new_dir, claim_run_dir
from rmt.train import trainer
from rmt.train.resume import resume_config


# ----------------------------------------------------------------------------- unique folders
def test_callers_asking_for_the_same_name_each_get_their_own_folder(tmp_path):
    wanted, got, start = tmp_path / "day" / "12-00-00_demo", [], threading.Barrier(8)

    def claim():
        start.wait()
        got.append(claim_new_dir(wanted))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(got)) == 8 and wanted in got
    assert sorted(p.name for p in wanted.parent.iterdir()) == sorted(p.name for p in got)


def test_a_given_run_folder_is_claimed_once(tmp_path):
    claim_run_dir(tmp_path / "run", ".hydra")
    with pytest.raises(CheckpointError, match="already used by another rmt-train"):
        claim_run_dir(tmp_path / "run", ".hydra")


def _run_folders(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.rglob("summary.json"))


@pytest.mark.slow  # six interpreters on a shared machine: about 2 minutes
def test_identical_commands_started_together_get_their_own_folders(tmp_path):
    args = [*FAST, "trainer.max_steps=2"]
    train = [*python_module("rmt.cli.train"), *args]
    sweep = [*python_module("rmt.cli.train"), "--multirun", *args, "trainer.seed=0,1"]
    commands = [train] * 4 + [sweep] * 2
    logs = [tmp_path / f"out{i}.txt" for i in range(len(commands))]
    procs = []
    for cmd, log in zip(commands, logs, strict=True):
        with log.open("w") as out:  # a file, not a pipe: a full pipe would block the child
            procs.append(subprocess.Popen(cmd, cwd=tmp_path, env=checkout_env(), stdout=out,
                                          stderr=subprocess.STDOUT))  # fmt: skip
    for proc, log in zip(procs, logs, strict=True):
        assert proc.wait(timeout=900) == 0, log.read_text()[-3000:]
    runs = _run_folders(tmp_path / "outputs" / "train")
    assert len(runs) == 4
    sweeps = sorted((tmp_path / "outputs" / "multirun").glob("*/*"))
    assert len(sweeps) == 2
    for sweep in sweeps:
        assert [p.relative_to(sweep) for p in _run_folders(sweep)] == [Path("0"), Path("1")]
    for run in runs + [p for s in sweeps for p in _run_folders(s)]:
        summary = json.loads((run / "summary.json").read_text())
        assert Path(summary["output_dir"]).resolve() == run.resolve() and summary["steps"] == 2
        events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        train_steps = [e["step"] for e in events if e["split"] == "train"]
        assert train_steps == sorted(set(train_steps))  # one run's events, not two mixed
        assert (run / "best").is_dir() and (run / "last").is_dir()


# --------------------------------------------------------------------------- keys and +keys
@pytest.mark.parametrize(
    ("override", "fix"),
    [
        ("+memory.num_token=5", "memory.num_tokens"),
        ("+trainer.max_step=2", "trainer.max_steps"),
        ("+nmae=x", "name"),
    ],  # fmt: skip
)
def test_plus_key_outside_the_schema_is_refused(override, fix):
    with pytest.raises(ConfigError, match=rf"unknown key {override[1:].split('=')[0]}.*{fix}="):
        validate(typed(compose_config([*FAST, override])), check_backbone=False)


def test_plus_key_typo_leaves_no_run_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main_in_process(monkeypatch, *FAST, "+memory.num_token=5") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "memory.num_token " in err and "memory.num_tokens=" in err
    assert list(tmp_path.iterdir()) == []  # no outputs/, no empty run folder


def test_rmt_eval_refuses_a_plus_key_typo(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main_in_process(monkeypatch, "+sample=5", "checkpoint=x", cli="rmt-eval") == 2
    err = capsys.readouterr().err
    assert "unknown key sample " in err and "samples=" in err


# ------------------------------------------------------------------------------------ resume
@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A run of 2 steps that ran to its end, and a snapshot of its files."""
    run = tmp_path_factory.mktemp("finished") / "run"
    cfg = compose_config([*FAST, "trainer.max_steps=2"])
    cfg.output_dir = str(run)
    trainer.train(cfg)
    return run


def test_resuming_a_finished_run_changes_nothing(finished, monkeypatch, caplog):
    before = snapshot(finished)
    result = trainer.train(resume_config(finished, []))
    assert "already finished at step 2" in result["finished"] and result["steps"] == 2
    assert snapshot(finished) == before
    # through the CLI too, which also removes the invocation's own .hydra/resume-<time>
    assert main_in_process(monkeypatch, f"resume={finished}") == 0
    assert {k: v for k, v in snapshot(finished).items() if k != "train.log"} == {
        k: v for k, v in before.items() if k != "train.log"
    }


def test_max_steps_below_the_current_step_is_refused(finished, monkeypatch, capsys):
    before = snapshot(finished)
    with pytest.raises(CheckpointError, match="current step 2.*trainer.max_steps > 2"):
        trainer.train(resume_config(finished, ["trainer.max_steps=1"]))
    assert main_in_process(monkeypatch, f"resume={finished}", "trainer.max_steps=1") == 2
    assert "current step 2" in capsys.readouterr().err
    assert {k: v for k, v in snapshot(finished).items() if k != "train.log"} == {
        k: v for k, v in before.items() if k != "train.log"
    }


# ----------------------------------------------------------------------- refused commands
def test_resume_of_a_missing_folder_creates_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    missing = tmp_path / "no" / "such" / "run"
    assert main_in_process(monkeypatch, f"resume={missing}") == 2
    assert "config.yaml not found" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_train_refuses_a_folder_another_run_took(fast_cfg):
    cfg = fast_cfg("trainer.max_steps=1")
    run = Path(cfg.output_dir)
    run.mkdir()
    (run / "config.yaml").write_text("taken\n")  # config.yaml is created exclusively
    with pytest.raises(CheckpointError, match="already holds a run"):
        trainer.train(cfg)
    assert (run / "config.yaml").read_text() == "taken\n"


def test_failed_resume_keeps_the_saved_config(fast_cfg):
    cfg = fast_cfg("trainer.max_steps=1")
    run = Path(cfg.output_dir)
    run.mkdir()
    (run / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    before = (run / "config.yaml").read_bytes()
    with pytest.raises(CheckpointError, match="no complete last/"):  # no last/ to resume from
        trainer.train(resume_config(run, ["trainer.max_steps=7"]))
    assert (run / "config.yaml").read_bytes() == before


# --------------------------------------------------------------------------------- full disk
def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_a_full_disk_while_saving_keeps_earlier_checkpoints_and_resume_works(
    tmp_path, monkeypatch, capsys
):
    """The saves of step 4 hit ENOSPC after a partial write: one line saying the disk is full
    (path and bytes), no temporary folder left, the step-2 checkpoints untouched; once space is
    back, resume finishes the run."""
    run, real_write = tmp_path / "run", run_module.write_json

    def full_disk_at_step_4(path, data):
        if data.get("step") == 4:
            path.write_text("x" * 1000)  # a partial file, as on a real disk
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real_write(path, data)

    monkeypatch.setattr(run_module, "write_json", full_disk_at_step_4)
    args = [*FAST, "trainer.max_steps=4", "trainer.eval_every=2", f"hydra.run.dir={run}"]
    assert main_in_process(monkeypatch, *args) == 2
    line = _one_line(capsys)
    assert line.startswith(f"rmt-train: error: disk full: writing {run}/") and "bytes" in line
    assert f"resume={run}" in line
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == [".hydra"]
    for folder in ("last", "best"):
        assert json.loads((run / folder / "trainer_state.json").read_text())["step"] == 2

    monkeypatch.setattr(run_module, "write_json", real_write)  # space is free again
    assert main_in_process(monkeypatch, f"resume={run}") == 0
    assert json.loads((run / "summary.json").read_text())["steps"] == 4
    assert json.loads((run / "last" / "trainer_state.json").read_text())["step"] == 4


def test_a_new_run_on_a_full_disk_is_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(
        shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, 0)
    )
    assert main_in_process(monkeypatch, *FAST) == 2
    line = _one_line(capsys)
    assert line.startswith("rmt-train: error: disk full: ") and "0 bytes free" in line
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------- killed before a checkpoint
def test_a_run_killed_before_its_first_checkpoint_gets_one_consistent_advice(
    tmp_path, monkeypatch, capsys
):
    """resume= and a new run in the same folder both say: nothing to resume, start it again in a
    new folder; and that advice works."""
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "killed"
    (run / ".hydra").mkdir(parents=True)  # what a SIGKILL during the first steps leaves
    (run / ".hydra" / "overrides.yaml").write_text("- debug=fast\n")
    (run / "config.yaml").write_text(OmegaConf.to_yaml(compose_config(FAST)))
    (run / "metrics.jsonl").write_text('{"step": 1, "split": "train", "loss": 3.0}\n')
    advice = "nothing to resume. Start it again as a new run in a new folder"
    assert main_in_process(monkeypatch, f"resume={run}") == 2
    assert advice in _one_line(capsys)
    assert main_in_process(monkeypatch, *FAST, f"hydra.run.dir={run}") == 2
    line = _one_line(capsys)
    assert advice in line and "resume=" not in line.split("nothing to resume")[0]
    assert main_in_process(monkeypatch, *FAST, "trainer.max_steps=1") == 0  # the advice works
    assert len(list((tmp_path / "outputs" / "train").glob("*/*/summary.json"))) == 1


# ---------------------------------------------------------------------------- small things
def test_train_log_has_the_validation_lines_and_no_library_bar(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    assert main_in_process(monkeypatch, *FAST, "trainer.max_steps=2", "trainer.eval_every=1",
                           f"hydra.run.dir={run}") == 0  # fmt: skip
    assert "Writing model shards" not in capsys.readouterr().err  # would break rmt's own bar
    valid = [line for line in (run / "train.log").read_text().splitlines() if "valid step" in line]
    assert [line.split("valid step ")[1].split(" |")[0] for line in valid] == ["1", "2"]
    assert all("accuracy " in line and "loss " in line for line in valid)


def test_a_time_budgeted_run_counts_its_bar_in_seconds_of_the_budget(fast_cfg):
    """The ETA of a budgeted run comes from trainer.max_minutes, not from max_steps=100000."""
    run = trainer.Trainer(fast_cfg("trainer.max_steps=100000", "trainer.max_minutes=0.05"))
    run.setup()
    run.fit()
    assert run.bar.total == 3 and run.progress.step < 100000  # seconds of the budget
    steps = trainer.Trainer(fast_cfg("trainer.max_steps=2", run="steps"))
    steps.setup()
    steps.fit()
    assert steps.bar.total == 2  # steps


def test_rmt_eval_on_a_full_disk_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(
        shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, 0)
    )
    assert main_in_process(monkeypatch, "checkpoint=x", cli="rmt-eval") == 2
    assert _one_line(capsys).startswith("rmt-eval: error: disk full: ")
    assert list(tmp_path.iterdir()) == []


def test_discard_refused_removes_only_what_hydra_wrote(tmp_path, monkeypatch):
    from rmt.run import discard_refused

    work = tmp_path / "work"
    (work / ".hydra").mkdir(parents=True)
    (work / "train.log").write_text("")
    monkeypatch.chdir(work)
    discard_refused(work)  # hydra.run.dir=. : the working directory is never removed,
    discard_refused(tmp_path)  # nor one above it, even when it holds only Hydra's files
    assert (work / "train.log").exists()

    hydra_only = work / "out" / "refused"
    (hydra_only / ".hydra").mkdir(parents=True)
    (hydra_only / "eval.log").write_text("")
    discard_refused(hydra_only)
    assert not (work / "out").exists()  # the folder and its emptied parent

    other = work / "other"
    (other / ".hydra").mkdir(parents=True)
    (other / "notes.md").write_text("kept")
    discard_refused(other)
    assert (other / "notes.md").exists()

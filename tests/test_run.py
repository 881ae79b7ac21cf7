"""The run-folder contract: atomic publish, resolving checkpoints, one error type, overrides."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rmt import run
from rmt.eval import checkpoint as eval_checkpoint
from rmt.run import CheckpointError


def _state(folder: Path, step: int) -> Path:
    folder.mkdir(parents=True)
    run.write_json(folder / run.STATE_FILE, {"step": step})
    return folder


def test_one_checkpoint_error_for_train_and_eval():
    assert eval_checkpoint.CheckpointError is CheckpointError
    assert issubclass(CheckpointError, ValueError)  # rmt-eval reports it like bad input


def test_atomic_dir_publishes_only_complete_folders(tmp_path: Path):
    target = tmp_path / "best"
    with run.atomic_dir(target) as tmp:
        (tmp / run.STATE_FILE).write_text('{"step": 1}')
        assert not target.exists()
    assert run.read_state(target) == {"step": 1}
    with pytest.raises(RuntimeError), run.atomic_dir(target) as tmp:
        (tmp / run.STATE_FILE).write_text('{"step": 2}')
        raise RuntimeError("crash mid-save")
    assert run.read_state(target) == {"step": 1}  # the previous checkpoint is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]


def test_locate_best_from_run_folder_best_or_crash_leftover(tmp_path: Path):
    rundir = tmp_path / "run"
    (rundir / ".hydra").mkdir(parents=True)
    best = _state(rundir / ".best.old", 3)  # a crash between the two renames
    (best / "config.json").write_text("{}")
    assert run.locate_best(rundir) == (best, rundir)
    assert run.locate_best(best) == (best, rundir)
    best.rename(rundir / "best")
    assert run.locate_best(rundir) == (rundir / "best", rundir)
    (rundir / "best" / "config.json").unlink()
    (rundir / "best" / run.STATE_FILE).unlink()
    (rundir / "best").rmdir()
    (rundir / "last").mkdir()
    with pytest.raises(CheckpointError, match="has last/ but no best/"):
        run.locate_best(rundir)


def test_fresh_run_dir_and_damaged_state(tmp_path: Path):
    run.check_fresh_run_dir(tmp_path)  # empty: fine
    (tmp_path / run.METRICS_FILE).write_text("")
    with pytest.raises(CheckpointError, match="never overwritten"):
        run.check_fresh_run_dir(tmp_path)
    (tmp_path / run.STATE_FILE).write_text("{oops")
    with pytest.raises(CheckpointError, match="is not valid JSON.*Copy the run folder again"):
        run.read_state(tmp_path)
    assert run.new_state(step=2)["rmt_version"]


def test_overrides(tmp_path: Path):
    assert run.override_key("++memory.num_tokens=4") == "memory.num_tokens"
    assert run.override_key("~experiment") == "experiment"
    (tmp_path / ".hydra").mkdir()
    (tmp_path / run.OVERRIDES_FILE).write_text("- debug=fast\n- memory.num_tokens=4\n")
    assert run.read_overrides(tmp_path) == ["debug=fast", "memory.num_tokens=4"]
    (tmp_path / run.OVERRIDES_FILE).write_text(json.dumps({"not": "a list"}))
    with pytest.raises(ValueError, match="should be a YAML list"):
        run.read_overrides(tmp_path)

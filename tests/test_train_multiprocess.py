"""Two CPU processes under ``accelerate launch`` (gloo): one run folder, written by rank 0."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

pytestmark = pytest.mark.multiprocess


def test_two_processes_share_one_run_folder(tmp_path):
    launcher = shutil.which("accelerate")
    if launcher is None:
        pytest.skip("the accelerate CLI is not installed")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [launcher, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
           "-m", "rmt.cli.train", "debug=fast", "trainer.progress_bar=false"]  # fmt: skip
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]

    runs = [p for p in (tmp_path / "outputs" / "train").glob("*/*") if p.is_dir()]
    assert len(runs) == 1, runs  # rank 1's own Hydra folder (if its clock ticked) is removed
    run = runs[0]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["tokens"] > 0
    assert sorted(p.name for p in (run / "last").glob("random_states_*.pkl")) == [
        "random_states_0.pkl",
        "random_states_1.pkl",
    ]
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e["split"] == "train"] == [1, 2, 3, 4]  # written once
    valid = [e for e in events if e["split"] == "valid"]
    assert valid and all(e["samples"] == 8 for e in valid)  # gathered without duplicates
    assert (run / "train.log").read_text().count("run folder") == 1  # only rank 0 logs to file
    assert not list(run.glob(".*.tmp"))

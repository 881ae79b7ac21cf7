"""Two CPU processes under ``accelerate launch`` (gloo): sharded data, weights kept in sync, one
run folder written by rank 0.

The launched program is this checkout's ``rmt-train`` wrapped by tests/train_probe.py, which
records per process and micro-batch a fingerprint of the batch and of the weights it trains on.
"""

from __future__ import annotations

import json
import subprocess

import pytest
from helpers import TESTS, checkout_env, events, python_module

pytestmark = pytest.mark.multiprocess


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    # each rank gets its own Hydra run folder, so the removal of rank 1's stray folder
    # (it used to depend on whether the clock ticked between the two starts) always runs
    cmd = [*python_module("accelerate.commands.launch"), "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", "0", str(TESTS / "train_probe.py"), "debug=fast",
           "trainer.progress_bar=false", f"hydra.run.dir={root}/run_rank${{oc.env:RANK}}"]  # fmt: skip
    env = checkout_env(RMT_PROBE_OUT=str(root))
    result = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    probes = [
        [json.loads(line) for line in (root / f"rank{rank}.jsonl").read_text().splitlines()]
        for rank in (0, 1)
    ]
    return root, probes


def test_two_processes_share_one_run_folder(ddp_run):
    root, _ = ddp_run
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["run_rank0"]
    run = root / "run_rank0"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["tokens"] > 0
    assert sorted(p.name for p in (run / "last").glob("random_states_*.pkl")) == [
        "random_states_0.pkl",
        "random_states_1.pkl",
    ]
    assert [e["step"] for e in events(run, "train")] == [1, 2, 3, 4]  # written once
    valid = events(run, "valid")
    assert valid and all(e["samples"] == 8 for e in valid)  # gathered without duplicates
    assert (run / "train.log").read_text().count("run folder") == 1  # only rank 0 logs to file
    assert not list(run.glob(".*.tmp"))


def test_ranks_see_different_batches(ddp_run):
    _, (rank0, rank1) = ddp_run
    batches = [[e["batch"] for e in probe if e["kind"] == "batch"] for probe in (rank0, rank1)]
    assert len(batches[0]) == len(batches[1]) == 4  # one micro-batch per step, on each rank
    assert not set(batches[0]) & set(batches[1])  # sharded: no batch trained on twice


def test_weights_stay_equal_across_ranks(ddp_run):
    _, (rank0, rank1) = ddp_run
    weights = [[(e["kind"], e["weights"]) for e in probe if e["kind"] != "return"]
               for probe in (rank0, rank1)]  # fmt: skip
    assert weights[0] == weights[1]  # before every step and at every validation
    trained = [w for kind, w in weights[0] if kind == "batch"]
    assert len(set(trained)) == len(trained)  # and the steps did change them

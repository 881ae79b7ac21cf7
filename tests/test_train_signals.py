"""Pre-emption through real signals, in subprocesses of this checkout's ``rmt-train``.

Each run sends itself a signal at a chosen micro-batch (tests/train_probe.py), so the stop
step is deterministic while the signal path is the real one: the kernel delivers SIGTERM or
SIGINT, rmt's handler sets the flag, the loop saves ``last/`` and the CLI exits with
128 + signal. The resumed runs must then equal an uninterrupted run exactly, across a
curriculum stage: per-step losses, learning rates and gradient norms compared as plain lists.

All runs of the module start at once (a few seconds of interpreter start each), then the two
resumes run together.
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from helpers import TESTS, checkout_env, events, python_module
from safetensors.torch import load_file

# two curriculum stages (1 segment, then 1-2) of 3 steps, validation every 2 steps and at the
# stage's end, dropout and warmup: an exact resume needs step, stage, data position, RNG
# states, optimizer moments (fresh at the stage) and the best model of stage 0
COMMON = [
    "debug=fast", "trainer.progress_bar=false", "task=babilong_qa1", "task.min_facts=1",
    "task.max_facts=1", "task.curriculum=[{segments:[1],steps:3},{segments:[1,2],steps:3,max_ratio:0.5}]",
    "trainer.max_steps=6", "trainer.eval_every=2", "backbone.dropout=0.1",
    "optim.scheduler.warmup_steps=2", "trainer.aux_lm_loss=1.0",  # its loss must resume exactly too
]  # fmt: skip

RUNS = {  # name -> signals sent at a micro-batch (RMT_PROBE_SIGNALS), None for a plain run
    "full": None,
    "sigterm": "5:TERM",  # stops after step 5, inside stage 1
    "sigint": "2:INT",  # stops after step 2; the resume crosses into stage 1
    "twice_in_loop": "4:TERM,TERM",  # 2nd SIGTERM while step 4's validation saves last/
    "twice_at_exit": "5:TERM,TERM",  # 2nd SIGTERM while the pre-emption save of step 5 runs
}


class Run:
    """One ``rmt-train`` subprocess writing into ``<root>/<name>``; output goes to a file."""

    def __init__(self, root: Path, name: str, args: list[str], signals: str | None) -> None:
        self.folder, self.log = root / name, root / f"{name}.out"
        if signals is None:
            cmd = python_module("rmt.cli.train")
            env = checkout_env()
        else:
            cmd = [python_module("rmt.cli.train")[0], str(TESTS / "train_probe.py")]
            env = checkout_env(RMT_PROBE_SIGNALS=signals)
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(
                [*cmd, *args], cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT
            )

    def wait(self) -> tuple[int, str]:
        code = self.proc.wait(timeout=600)  # a hang guard; a loaded machine is slow
        return code, self.log.read_text()


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Run]:
    root = tmp_path_factory.mktemp("signals")
    started = {
        name: Run(root, name, [*COMMON, f"hydra.run.dir={root / name}"], signals)
        for name, signals in RUNS.items()
    }
    yield started
    for run in started.values():
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.wait()


@pytest.fixture(scope="module")
def resumed(runs) -> dict[str, tuple[dict, int, str]]:
    """``rmt-train resume=<run>`` of the two gracefully stopped runs, both at once.

    Per run: the trainer state it stopped with (read before resuming), exit status, output.
    """
    stopped = {}
    for name in ("sigterm", "sigint"):
        runs[name].wait()
        stopped[name] = _state(runs[name].folder)
    started = {
        name: Run(runs[name].folder.parent, f"{name}_resume", [f"resume={runs[name].folder}"], None)
        for name in stopped
    }
    return {name: (stopped[name], *run.wait()) for name, run in started.items()}


def _state(run: Path) -> dict:
    return json.loads((run / "last" / "trainer_state.json").read_text())


def _curve(run: Path) -> dict[str, list]:
    train, valid = events(run, "train"), events(run, "valid")
    return {
        "step": [e["step"] for e in train],
        "stage": [e["stage"] for e in train],
        "loss": [e["loss"] for e in train],
        "lm_loss": [e["lm_loss"] for e in train],
        "lr": [e["lr"] for e in train],
        "grad_norm": [e["grad_norm"] for e in train],
        "valid": [(e["step"], e["stage"], e["loss"], e["accuracy"]) for e in valid],
    }


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys()
    assert [k for k in wa if not torch.equal(wa[k], wb[k])] == []


@pytest.mark.parametrize(
    "name, signum, stopped_at, stage, stage_start",
    [("sigterm", signal.SIGTERM, 5, 1, 3), ("sigint", signal.SIGINT, 2, 0, 0)],
)
def test_signal_saves_last_and_resume_is_exact(
    runs, resumed, name, signum, stopped_at, stage, stage_start
):
    full_code, full_out = runs["full"].wait()
    assert full_code == 0, full_out[-3000:]
    code, out = runs[name].wait()
    folder = runs[name].folder
    assert code == 128 + signum, out[-3000:]
    assert f"stopped at step {stopped_at}; resume with: rmt-train resume={folder}" in out
    state, code, out = resumed[name]
    progress = state["progress"]
    where = [progress[key] for key in ("step", "stage", "stage_start")]
    assert where == [stopped_at, stage, stage_start]

    assert code == 0, out[-3000:]
    full, again = _curve(runs["full"].folder), _curve(folder)
    assert full["step"] == [1, 2, 3, 4, 5, 6] and full["stage"] == [0, 0, 0, 1, 1, 1]
    assert again == full  # floats compared exactly: same code, same data, same RNG streams
    _assert_same_weights(runs["full"].folder / "best", folder / "best")
    _assert_same_weights(runs["full"].folder / "last", folder / "last")
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["steps"] == 6 and summary["stage"] == 1


@pytest.mark.parametrize("name, kept_step", [("twice_in_loop", 3), ("twice_at_exit", 4)])
def test_second_signal_exits_at_once(runs, name, kept_step):
    code, out = runs[name].wait()
    folder = runs[name].folder
    assert code == -signal.SIGTERM, out[-3000:]  # ended by the signal: status 128 + 15
    assert "resume with" not in out and not (folder / "summary.json").exists()
    # the save it interrupted never replaced the previous complete checkpoint
    assert _state(folder)["step"] == kept_step

"""``rmt-train`` with test probes, for subprocess tests (not a test module; not collected).

    python tests/train_probe.py <rmt-train arguments>
    accelerate launch ... tests/train_probe.py <rmt-train arguments>

It calls the real Hydra entrypoint (``rmt.cli.train.main``) after wrapping three functions of the
training loop, so nothing in the package carries test hooks. Set through the environment:

``RMT_PROBE_OUT=<folder>``
    every process appends to ``<folder>/rank<R>.jsonl`` one line per micro-batch (a fingerprint
    of the batch and of the weights it trains on) and one per validation (the weights), so a
    test can check that ranks see different data and keep equal weights.
``RMT_PROBE_SIGNALS=<micro-batch>:<SIG>[,<SIG>][;...]``
    the process sends itself real signals: ``5:TERM`` sends SIGTERM while micro-batch 5
    (1-based) trains, ``2:INT`` SIGINT. A second name (``2:TERM,TERM``) is sent when the run
    next saves a checkpoint, i.e. a second signal while the first one's save is under way.

Used as a Hydra callback, :class:`RecordReturn` appends what the task function returned (the
value an optimising sweeper reads) to ``$RMT_PROBE_OUT/returns.jsonl``:
``+hydra.callbacks.record._target_=train_probe.RecordReturn``.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from pathlib import Path

from hydra.experimental.callback import Callback


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def _record(event: dict, name: str | None = None) -> None:
    out = os.environ.get("RMT_PROBE_OUT")
    if out:
        with (Path(out) / (name or f"rank{_rank()}.jsonl")).open("a") as f:
            f.write(json.dumps(event) + "\n")


def _digest(tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        t = t.to_local() if hasattr(t, "to_local") else t  # FSDP2: this rank's shard
        h.update(t.detach().float().cpu().clone().numpy().tobytes())  # clone: numpy() pins storage
    return h.hexdigest()[:16]


def _send(name: str) -> None:
    os.kill(os.getpid(), getattr(signal, f"SIG{name}"))
    time.sleep(0.05)  # an interruptible wait: Python runs the handler before it returns


def _plan() -> dict[int, list[str]]:
    plan = {}
    for part in filter(None, os.environ.get("RMT_PROBE_SIGNALS", "").split(";")):
        at, _, names = part.partition(":")
        plan[int(at)] = names.split(",")
    return plan


def install() -> None:
    """Wrap the loop's loss and validation functions (the one place that touches internals)."""
    from rmt.tasks.babilong.task import BabilongTask
    from rmt.train import trainer

    plan, pending = _plan(), []
    task_loss, save_last = BabilongTask.loss, trainer.save_last
    evaluate = trainer.Trainer.evaluate
    calls = 0

    def probed_loss(self, model, batch, *, aux_weight):
        nonlocal calls
        calls += 1
        _record({"kind": "batch", "n": calls, "batch": _digest([batch["input_ids"]]),
                 "weights": _digest(model.parameters())})  # fmt: skip
        names = plan.get(calls, [])
        if names:
            _send(names[0])
            pending.extend(names[1:])
        return task_loss(self, model, batch, aux_weight=aux_weight)

    def probed_evaluate(self):
        _record({"kind": "valid", "after": calls, "weights": _digest(self.model.parameters())})
        return evaluate(self)

    def probed_save_last(*args, **kwargs):
        if pending:
            _send(pending.pop(0))
        return save_last(*args, **kwargs)

    BabilongTask.loss = probed_loss
    trainer.Trainer.evaluate = probed_evaluate
    trainer.save_last = probed_save_last


class RecordReturn(Callback):
    """Hydra callback: the return value of every job, as a sweeper receives it."""

    def on_job_end(self, config, job_return, **kwargs) -> None:
        _record({"kind": "return", "job": config.hydra.job.num, "value": job_return.return_value,
                 "status": job_return.status.name}, "returns.jsonl")  # fmt: skip


if __name__ == "__main__":
    install()
    from rmt.cli.train import main

    main()

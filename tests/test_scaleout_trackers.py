"""Trackers through Accelerate's ``log_with`` (``trainer.log_with``): off by default; offline they
write local files inside the run folder that hold exactly the numbers of ``metrics.jsonl``.

W&B runs with ``WANDB_MODE=offline`` (its history is read back from the run's ``.wandb`` log
with W&B's own protobuf schema); MLflow writes its file store at ``<run>/mlruns``. A test is
skipped when its package is not installed (``pip install 'rmt[wandb]'`` / ``'rmt[mlflow]'``).
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import pytest
from helpers import events

from rmt.errors import ConfigError
from rmt.train.trainer import train

pytestmark = pytest.mark.usefixtures("one_thread")


def expected(run: Path) -> dict[tuple[str, int], float]:
    """``metrics.jsonl`` as ``{("<split>/<key>", step): value}`` for every number logged."""
    table = {}
    for split in ("train", "valid"):
        for event in events(run, split):
            for key, value in event.items():
                if key not in ("step", "split"):
                    table[(f"{split}/{key}", event["step"])] = value
    return table


def wandb_records(path: Path) -> list:
    """The records of a ``.wandb`` log (LevelDB-style: 32 KiB blocks of 7-byte-headed chunks)."""
    from wandb.proto import wandb_internal_pb2

    data, pos, block, pending, records = path.read_bytes(), 7, 32768, b"", []
    assert data[:4] == b":W&B"[: len(data)]  # (the 7-byte header may still be on its way)
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last fragment of one
            records.append(wandb_internal_pb2.Record())
            records[-1].ParseFromString(pending)
            pending = b""
    return records


def wandb_history(run: Path) -> dict[tuple[str, int], float]:
    """The history rows of an offline W&B run, once its log is complete.

    ``run.finish()`` returns before W&B's service process has written the log (it buffers it
    until the stream closes), so wait for the run's ``exit`` record, at most a minute.
    """
    (path,) = run.glob("wandb/offline-run-*/run-*.wandb")
    deadline = time.monotonic() + 60
    records = wandb_records(path)
    while not any(r.WhichOneof("record_type") == "exit" for r in records):
        assert time.monotonic() < deadline, f"{path} has no exit record after a minute"
        time.sleep(0.2)
        records = wandb_records(path)
    table = {}
    for record in records:
        if record.WhichOneof("record_type") == "history":
            step = record.history.step.num
            for item in record.history.item:
                key = item.key or "/".join(item.nested_key)
                if not key.startswith("_"):  # W&B's own _step, _runtime, _timestamp
                    table[(key, step)] = json.loads(item.value_json)
    return table


def mlflow_metrics(run: Path) -> dict[tuple[str, int], float]:
    """Every metric file of the run's MLflow file store: lines ``<time> <value> <step>``."""
    (metrics,) = run.glob("mlruns/*/*/metrics")
    table = {}
    for path in metrics.rglob("*"):
        if path.is_file():
            key = path.relative_to(metrics).as_posix()
            for line in path.read_text().splitlines():
                _, value, step = line.split()
                table[(key, int(step))] = float(value)
    return table


@pytest.mark.parametrize("tracker", ["wandb", "mlflow"])
def test_offline_tracker_files_hold_the_metrics_of_metrics_jsonl(
    tracker, fast_cfg, monkeypatch, tmp_path
):
    pytest.importorskip(tracker)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = fast_cfg(f"trainer.log_with=[{tracker}]")
    train(cfg)
    run = Path(cfg.output_dir)
    logged = wandb_history(run) if tracker == "wandb" else mlflow_metrics(run)
    want = expected(run)
    assert len(want) > 20  # train and valid events of 4 steps
    assert logged == want


def test_trackers_are_off_by_default(fast_cfg):
    cfg = fast_cfg()
    assert list(cfg.trainer.log_with) == []
    train(cfg)
    run = Path(cfg.output_dir)
    assert not (run / "wandb").exists() and not (run / "mlruns").exists()


def test_unknown_tracker_fails_before_training(fast_cfg):
    cfg = fast_cfg("trainer.log_with=[comet]")
    with pytest.raises(ConfigError, match="trainer.log_with"):
        train(cfg)
    assert not (Path(cfg.output_dir) / "metrics.jsonl").exists()

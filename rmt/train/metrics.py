"""Training metrics: the running window between two log lines, and where events are written
(``metrics.jsonl`` + TensorBoard, main process only)."""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.tensorboard import SummaryWriter

from rmt.run import METRICS_FILE, TB_DIR
from rmt.train import trackers

_NOT_SCALARS = ("stage", "samples", "minutes")  # logged to metrics.jsonl, not plotted


def peak_memory_mb(device: torch.device | str) -> float:
    """This process's peak memory in MiB: allocated tensors on a CUDA device (what a run
    needs of the card), else the peak resident set size (Linux reports KiB)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class MetricsLog:
    """metrics.jsonl + TensorBoard (+ the trackers of ``trainer.log_with``), main process only."""

    def __init__(self, run_dir: Path, *, enabled: bool, resume_step: int | None,
                 accelerator=None) -> None:  # fmt: skip
        self.enabled = enabled
        self.accelerator = accelerator  # given when trackers are on
        self.path = run_dir / METRICS_FILE
        self.writer = None
        if not enabled:
            return
        if resume_step is not None and self.path.exists():
            # events logged after the checkpoint we resume from are replayed: drop them
            kept = [
                line
                for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= resume_step
            ]
            self.path.write_text("".join(line + "\n" for line in kept))
        purge = resume_step + 1 if resume_step is not None else None
        self.writer = SummaryWriter(str(run_dir / TB_DIR), purge_step=purge)

    def log(self, split: str, step: int, values: dict[str, Any]) -> None:
        if not self.enabled:
            return
        event = {"step": step, "split": split, **values}
        with self.path.open("a") as f:
            f.write(json.dumps(event) + "\n")
        for key, value in values.items():
            if isinstance(value, int | float) and key not in _NOT_SCALARS:
                self.writer.add_scalar(f"{split}/{key}", value, step)
        self.writer.flush()
        if self.accelerator is not None:
            trackers.log(self.accelerator, split, step, values)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class Window:
    """Loss parts, gradient norms, tokens and data waits of the micro-batches since the last log
    line. Values stay tensors until :meth:`reduce`: no host sync per step (a GPU keeps queueing)."""

    def __init__(self) -> None:
        self.values: dict[str, list[torch.Tensor]] = {}
        self.tokens: list[torch.Tensor] = []
        self.data_wait = 0.0  # seconds the loop waited for the next batch
        self.start = time.perf_counter()

    def add(self, parts: dict[str, torch.Tensor], grad_norm, n_tokens) -> None:
        self.tokens.append(torch.as_tensor(n_tokens))
        for key, value in parts.items():
            self.values.setdefault(key, []).append(value.detach().float().reshape(()))
        if grad_norm is not None:
            grad = torch.as_tensor(grad_norm, dtype=torch.float32)
            self.values.setdefault("grad_norm", []).append(grad.detach().reshape(()))

    def reduce(self, accelerator) -> tuple[dict[str, float], int, float]:
        """Means over the window and the processes (plus ``data_wait_share``: the fraction of
        the window's wall time spent waiting for batches), tokens of all processes, tokens/s."""
        device = accelerator.device
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        local = sum(int(t) for t in self.tokens)
        tokens = int(accelerator.reduce(torch.tensor(local, device=device), "sum").item())
        means = {
            key: accelerator.reduce(torch.stack(v).to(device).mean(), "mean").item()
            for key, v in sorted(self.values.items())
        }
        means["data_wait_share"] = self.data_wait / elapsed
        return means, tokens, tokens / elapsed


def summary_table(summary: dict[str, Any]) -> str:
    """The final console table."""
    rows = [(k, f"{v:.4g}" if isinstance(v, float) else str(v)) for k, v in summary.items()]
    width = max(len(k) for k, _ in rows)
    line = "-" * (width + 3 + max(len(v) for _, v in rows))
    body = "\n".join(f"{k.ljust(width)} | {v}" for k, v in rows)
    return f"{line}\n{body}\n{line}"

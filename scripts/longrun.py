"""Time and peak memory of evaluating very long inputs (up to 1M tokens and beyond) on CPU.

    python scripts/longrun.py --lengths 4k 32k 1M --phases      # tiny random model, offline
    python scripts/longrun.py --checkpoint <run dir> --lengths 1M
    python scripts/longrun.py --lengths 4k 32k --control         # also the non-streaming path
    MALLOC_MMAP_THRESHOLD_=65536 python scripts/longrun.py ...   # exact RSS accounting (glibc)

Each length builds one generated BABILong sample and scores it through the same code path as
``rmt-eval`` (:func:`rmt.eval.grid.evaluate_model`, batch size 1). Peak memory is the
process's peak resident set size (the kernel's high-water mark, reset before each run; a
sampling thread where that is not available) minus the resident size just before the
measurement; a warm-up run first allocates what every run needs once (thread
pools, caches). With glibc, ``MALLOC_MMAP_THRESHOLD_=65536`` makes every allocation above
64 KiB its own mapping, returned on free, so RSS follows the working set exactly instead of
hiding growth in already-freed heap. ``--control`` also runs ``model(prompt, return_logits=True)``, which keeps
logits for every input token: it shows that the measurement does see memory that grows with
the input, so a flat curve for the streaming path means something.

Prints one JSON object per length (and writes them to ``--out`` if given).
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import torch
from omegaconf import OmegaConf

from rmt.eval import checkpoint as ckpt_io
from rmt.eval.grid import Grid, evaluate_model
from rmt.modeling.backbones import tiny_backbone_config
from rmt.modeling.factory import build_model
from rmt.tasks.babilong.config import BabilongTaskConfig
from rmt.tasks.babilong.haystack import parse_length
from rmt.tasks.babilong.tokenizer import build_tokenizer
from rmt.tasks.base import EvalCell, build_task


class PeakRSS:
    """Context manager: peak resident memory above the level at entry, in bytes.

    On Linux the kernel's own high-water mark is used: writing ``5`` to
    ``/proc/self/clear_refs`` resets ``VmHWM`` to the current RSS, and ``VmHWM`` at exit is the
    exact peak in between (no sampling gaps). Elsewhere a thread samples RSS every millisecond.
    """

    def __init__(self, interval: float = 0.001):
        self.interval = interval
        self.process = psutil.Process()
        self.base = self.peak = 0
        self.method = "vmhwm" if _reset_hwm() else "sampling"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRSS:
        self.base = self.peak = self.process.memory_info().rss
        if self.method == "vmhwm":
            _reset_hwm()
        else:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
        current = self.process.memory_info().rss
        self.peak = max(self.peak, current, _hwm() if self.method == "vmhwm" else 0)

    @property
    def delta(self) -> int:
        return self.peak - self.base


def _hwm() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _hwm() > 0
    except OSError:
        return False


def tiny_model(tokenizer, *, segment_size: int = 512, num_mem_tokens: int = 16, seed: int = 0):
    """A random tiny Llama-style RMT sized for CPU runs (weights do not matter for memory)."""
    torch.manual_seed(seed)
    bb = tiny_backbone_config(
        "llama",
        vocab_size=len(tokenizer),
        hidden_size=64,
        num_layers=2,
        num_heads=4,
        max_positions=segment_size + 2 * num_mem_tokens + 16,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = build_model(
        backbone_config=bb, num_mem_tokens=num_mem_tokens, segment_size=segment_size
    )
    return model.eval()


def babilong(tokenizer, *, seed: int = 0):
    """The BABILong task as ``rmt-eval`` builds it (generated stories, builtin background) and
    its items function: one test-split sample per cell."""
    task = build_task(OmegaConf.structured(BabilongTaskConfig), tokenizer=tokenizer,
                      segment_size=1, seed=0)  # fmt: skip
    return task, lambda cell: task.eval_items(cell, samples=1, seed=seed)


def _grid(task) -> Grid:
    return Grid(task, "longrun", "", batch_size=1, max_new_tokens=4)


def measure(
    model,
    tokenizer,
    task: str,
    length: int,
    *,
    babilong_task,
    items,
    control: bool = False,
    phases: bool = False,
) -> dict:
    """Score one generated sample of ``length`` tokens; return time and peak memory."""
    cell = EvalCell(task, str(length), length)
    run: Callable[[], dict]
    if not control:

        def run() -> dict:
            rows = evaluate_model(model, _grid(babilong_task), [cell], items,
                                  progress=False)  # fmt: skip
            return {"accuracy": rows[0].accuracy, "n": rows[0].n}
    else:

        def run() -> dict:
            item = next(iter(items(cell)))
            ids = torch.as_tensor(item.prompt_ids, dtype=torch.long)[None]
            with torch.no_grad():
                out = model(ids, return_logits=True)
            return {"logits_mb": out.logits.numel() * out.logits.element_size() / 2**20}

    with PeakRSS() as mem:
        t0 = time.perf_counter()
        info = run()
        seconds = time.perf_counter() - t0
    if phases and not control:
        info.update(_phases(model, _grid(babilong_task), cell, items))
    return {
        "mode": "full_logits_control" if control else "rmt_eval",
        "length": length,
        "seconds": round(seconds, 3),
        "rss_before_mb": round(mem.base / 2**20, 1),
        "peak_rss_mb": round(mem.peak / 2**20, 1),
        "peak_delta_mb": round(mem.delta / 2**20, 2),
        "memory_method": mem.method,
        **info,
    }


def _phases(model, grid: Grid, cell: EvalCell, items) -> dict:
    """Split the peak between building the sample and reading it through the model.

    The scoring phase starts from the built prompt (already in memory), so its peak is what the
    model's segment-by-segment pass adds on top of the input.
    """
    with PeakRSS() as build:
        t0 = time.perf_counter()
        item = next(iter(items(cell)))
        build_s = time.perf_counter() - t0
    with PeakRSS() as score:
        t0 = time.perf_counter()
        evaluate_model(model, grid, [cell], lambda _: [item], progress=False)
        score_s = time.perf_counter() - t0
    return {
        "prompt_tokens": len(item.prompt_ids),
        "build_seconds": round(build_s, 3),
        "build_peak_delta_mb": round(build.delta / 2**20, 2),
        "score_seconds": round(score_s, 3),
        "score_peak_delta_mb": round(score.delta / 2**20, 2),
    }


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="python scripts/longrun.py", description=__doc__)
    parser.add_argument("--lengths", nargs="+", default=["4k", "32k"])
    parser.add_argument(
        "--checkpoint", default=None, help="run folder (default: tiny random model)"
    )
    parser.add_argument("--task", default="qa1")
    parser.add_argument("--segment-size", type=int, default=512)
    parser.add_argument(
        "--control", action="store_true", help="also measure full logits at the shortest length"
    )
    parser.add_argument(
        "--phases",
        action="store_true",
        help="also measure building the sample and scoring it separately (runs each twice)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--out", default=None, help="write the JSON lines here too")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.checkpoint:
        model, tokenizer = ckpt_io.load(ckpt_io.check(args.checkpoint))
    else:
        tokenizer = build_tokenizer()
        model = tiny_model(tokenizer, segment_size=args.segment_size)
    lengths = [parse_length(x) for x in args.lengths]
    kw = dict(zip(("babilong_task", "items"), babilong(tokenizer), strict=True))
    warm_up = 2 * model.config.segment_size
    measure(model, tokenizer, args.task, warm_up, **kw)
    results = []
    for length in lengths:
        results.append(measure(model, tokenizer, args.task, length, **kw, phases=args.phases))
        print(json.dumps(results[-1]), flush=True)
    if args.control:  # at the shortest length: per-token growth shows at any length, cheaply
        results.append(measure(model, tokenizer, args.task, min(lengths), **kw, control=True))
        print(json.dumps(results[-1]), flush=True)
    if args.out:
        Path(args.out).write_text("".join(json.dumps(r) + "\n" for r in results))
    return results


if __name__ == "__main__":
    main()

"""Benchmark BABILong sample building: token ids of 4k .. 1M-token samples, with formatting.

Prints JSON (median milliseconds per sample after warm-up) and writes a PNG plot under
outputs/bench/. Usage: ``python scripts/bench_data.py [--repeats 7] [--task qa2] [--lengths 4k 1M]``.
Targets (issue 3): a 16k sample in milliseconds, a 1M sample in about a second.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from rmt.tasks.babilong.background import make_background
from rmt.tasks.babilong.format import format_example
from rmt.tasks.babilong.generators import generate_sample
from rmt.tasks.babilong.haystack import HaystackBuilder, parse_length
from rmt.tasks.babilong.tokenizer import build_tokenizer

LENGTHS = ("4k", "16k", "128k", "1M")


def time_build(builder, tokenizer, task: str, length: str, repeats: int) -> list[float]:
    times = []
    for i in range(repeats + 1):  # the first run warms up
        start = time.perf_counter()
        sample = generate_sample(task, i)
        hay = builder.build(sample, length, seed=i)
        item = format_example(tokenizer, hay.input_ids, sample.question, sample.answer)
        elapsed = time.perf_counter() - start
        assert len(hay.input_ids) == parse_length(length) and item["prompt_length"] > 0
        if i:
            times.append(elapsed)
    return times


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--task", default="qa2")
    parser.add_argument("--out", default="outputs/bench")
    parser.add_argument("--lengths", nargs="+", default=list(LENGTHS))
    args = parser.parse_args(argv)

    start = time.perf_counter()
    tokenizer = build_tokenizer()
    background = make_background("builtin")
    builder = HaystackBuilder(tokenizer, background)
    setup_s = time.perf_counter() - start

    results = {
        "task": args.task,
        "repeats": args.repeats,
        "setup_s": round(setup_s, 3),
        "background_tokens": int(len(builder.flat)),
        "median_ms": {},
        "min_ms": {},
    }
    for length in args.lengths:
        times = time_build(builder, tokenizer, args.task, length, args.repeats)
        results["median_ms"][length] = round(1000 * statistics.median(times), 3)
        results["min_ms"][length] = round(1000 * min(times), 3)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plot = out / "bench_data.png"
    _plot(results, plot)
    results["plot"] = str(plot)
    print(json.dumps(results, indent=2))
    return results


def _plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tokens = [parse_length(x) for x in results["median_ms"]]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.loglog(tokens, list(results["median_ms"].values()), "o-", label="median")
    ax.set_xticks(tokens, list(results["median_ms"]))
    ax.set_xlabel("sample length (tokens)")
    ax.set_ylabel("build + format time (ms)")
    ax.set_title(f"BABILong sample build time ({results['task']})")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()

"""Batched scoring benchmark: samples/s of rmt-eval's answer path against input length.

One point = `generate_answers` (what `AnswerTask.predict`, hence rmt-eval and validation, calls)
on a batch of random prompts of about L tokens: left-padded, read segment by segment through
memory, then `max_new_tokens` greedy tokens from the backbone's `generate` (no eos, so every point
decodes the same number of tokens; judging the decoded text is left out). Prompt lengths are
L minus 0..jitter-1 tokens, as the prompts of one rmt-eval cell differ a little, so the batch is
padded like rmt-eval's. Each point runs in its own process (fork on CPU); timed runs follow one
warm-up on the same batch cut to 4 segments (first-call costs, and compiling with `--compile`).

    python scripts/bench_eval.py --backbone tiny_d64 --batches 8,32 --lengths 4k,8k,16k,32k,64k,128k

Reports samples/s (wall, the median of `--repeats` runs) and samples per process CPU-second (the
measure that survives a loaded machine with `--threads 1`), tokens/s, peak memory (RSS on CPU,
allocated on CUDA), and the load average before and after each point. Prints one JSON document and writes `<out>/eval_<backbone>_<device>[_compiled]
[_<label>].{json,png}`. `--label main` with `PYTHONPATH=<a checkout of main>` measures the code
before a change with the same script.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_common as bc  # noqa: E402

WARMUP_SEGMENTS = 4


def prompts_for(p: dict) -> list:
    """`batch` random prompts of `length - j` tokens, j drawn from 0..jitter-1 (seeded)."""
    import torch

    g = torch.Generator().manual_seed(p["seed"])
    vocab = bc.PRESETS[p["backbone"]].vocab_size
    short = torch.randint(0, max(p["jitter"], 1), (p["batch"],), generator=g).tolist()
    return [torch.randint(0, vocab - 1, (p["length"] - j,), generator=g) for j in short]


def build(p: dict):
    """The RMT model of one point, on its device and dtype, in eval mode (compiled if asked)."""
    from rmt import RMTConfig, RMTForCausalLM

    preset = bc.PRESETS[p["backbone"]]
    seg, mem = p["segment_size"], p["mem_tokens"]
    bb = bc.backbone_config(preset, max(preset.max_positions, seg + 2 * mem + p["new_tokens"]))
    model = RMTForCausalLM(RMTConfig(backbone_config=bb, num_mem_tokens=mem, segment_size=seg))
    model = model.to(device=p["device"], dtype=bc.resolve_dtype(p["dtype"], p["device"])).eval()
    if p["compile"]:
        model.compile_segments(backend=p["compile_backend"])
    return model


def measure(p: dict) -> dict:
    import torch

    from rmt.tasks.generative import generate_answers

    if p["threads"]:
        torch.set_num_threads(p["threads"])
    torch.manual_seed(p["seed"])
    model = build(p)
    prompts = prompts_for(p)
    pad = bc.PRESETS[p["backbone"]].vocab_size - 1

    def score(batch) -> list[list[int]]:
        return generate_answers(model, batch, mode="rmt", max_new_tokens=p["new_tokens"],
                                pad_id=pad, eos_id=None)  # fmt: skip

    cut = max(p["length"] - WARMUP_SEGMENTS * p["segment_size"], 0)
    load_before = list(os.getloadavg())
    start = time.perf_counter()
    score([q[: len(q) - cut] for q in prompts])  # same batch shape, 4 segments: warm-up
    bc.sync(p["device"])
    warmup_s = time.perf_counter() - start
    if p["device"] == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times, cpus = [], []
    for _ in range(p["repeats"]):
        start, cpu = time.perf_counter(), time.process_time()
        answers = score(prompts)
        bc.sync(p["device"])
        times.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
    wall, cpu = statistics.median(times), statistics.median(cpus)
    top = profile_ops(lambda: score(prompts), p["profile"]) if p["profile"] else None
    tokens = sum(len(q) for q in prompts)
    step = getattr(model, "_segment_step", None)
    return {
        "status": "ok", "backbone": p["backbone"], "batch": p["batch"], "length": p["length"],
        "prompt_tokens": tokens, "samples_per_s": round(p["batch"] / wall, 3),
        "samples_per_cpu_s": round(p["batch"] / cpu, 3), "tokens_per_s": round(tokens / wall, 1),
        "seconds": round(wall, 4), "seconds_all": [round(t, 4) for t in times],
        "cpu_s": round(cpu, 4), "cpu_s_all": [round(t, 4) for t in cpus],
        "warmup_s": round(warmup_s, 2), "new_tokens": len(answers[0]),
        "compiled": None if step is None else step.compiled is not None,
        "load_avg_before": [round(v, 2) for v in load_before],
        "load_avg_after": [round(v, 2) for v in os.getloadavg()],
        "peak_rss_mb": round(bc.peak_rss_mb(), 1),
        "peak_mb": round(torch.cuda.max_memory_allocated() / 2**20 if p["device"] == "cuda"
                         else bc.peak_rss_mb(), 1),
        **({"profile_top_ops": top} if top else {}),
    }  # fmt: skip


def profile_ops(fn, rows: int) -> list[dict]:
    """One more run under torch.profiler (CPU activity): the `rows` ops with the most self CPU
    time, and what share of the run's profiled CPU time each took."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in ops) or 1
    return [{"op": e.key, "self_cpu_ms": round(e.self_cpu_time_total / 1e3, 1), "calls": e.count,
             "share": round(e.self_cpu_time_total / total, 3)} for e in ops[:rows]]  # fmt: skip


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ok = [p for p in result["points"] if p.get("status") == "ok"]
    for batch in sorted({p["batch"] for p in ok}):
        pts = [p for p in ok if p["batch"] == batch]
        ax.plot([p["length"] for p in pts], [p["samples_per_s"] for p in pts], "o-",
                label=f"batch {batch}")  # fmt: skip
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("input tokens per sample")
    ax.set_ylabel("samples/s (read + answer)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    s = result["settings"]
    ax.set_title(f"Batched scoring, {result['backbone']}, {result['device']}"
                 f"{', compiled' if s['compile'] else ''} ({s['label'] or 'this checkout'})",
                 fontsize=9)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv=None) -> argparse.Namespace:
    ap = bc.argument_parser(__doc__)
    ap.add_argument("--lengths", default="4k,8k,16k,32k,64k,128k", help="input tokens per sample")
    ap.add_argument("--batches", default="8,32", help="samples per batch (comma-separated)")
    ap.add_argument("--jitter", type=int, default=32, help="prompts are L - 0..jitter-1 tokens")
    ap.add_argument("--new-tokens", type=int, default=8, help="answer tokens (rmt-eval's default)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per point (median kept)")
    ap.add_argument("--segment-size", type=int, default=None, help="default: the preset's")
    ap.add_argument("--mem-tokens", type=int, default=None, help="default: the preset's")
    ap.add_argument("--dtype", default="auto", help="auto (bf16 on CUDA) | fp32 | bf16")
    ap.add_argument("--compile", action="store_true", help="model.compile_segments() (rmt-eval's compile=true)")  # fmt: skip
    ap.add_argument("--compile-backend", default="inductor",
                    help="torch.compile backend with --compile (eager: dynamo capture only, a smoke test)")  # fmt: skip
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    ap.add_argument("--profile", type=int, default=0, metavar="N",
                    help="one more run under torch.profiler: its top N ops by self CPU time")  # fmt: skip
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per point")
    ap.add_argument("--label", default="", help="names the code measured (e.g. main), in the file name")  # fmt: skip
    ap.add_argument("--out", default="outputs/bench", help="folder for the JSON and PNG")
    ap.add_argument("--quick", action="store_true", help="smoke test: tiny sizes, two lengths")
    ap.add_argument("--isolate", default="auto", choices=bc.ISOLATION,
                    help="where each point runs: auto (fork on CPU, exec on CUDA), fork, exec, none")  # fmt: skip
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.quick:
        args.lengths = "256,512" if args.lengths == ap.get_default("lengths") else args.lengths
        args.batches = "2,4" if args.batches == ap.get_default("batches") else args.batches
        args.segment_size = args.segment_size or 32
        args.mem_tokens = args.mem_tokens if args.mem_tokens is not None else 4
        args.new_tokens, args.repeats, args.jitter = min(args.new_tokens, 2), 1, min(args.jitter, 8)
    if args.new_tokens < 1 or args.repeats < 1 or args.jitter < 0:
        raise SystemExit("--new-tokens and --repeats must be >= 1, --jitter >= 0")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    begun = bc.begin(args, measure)
    if begun is None:  # a child process: it measured its point
        return {}
    device, isolation, load_at_start, started = begun
    if isolation == "fork":
        bc.preload("torch", "transformers", "rmt", "rmt.modeling.causal_lm", "rmt.tasks.generative")
    preset = bc.PRESETS[args.backbone]
    lengths = sorted(bc.parse_int_list(args.lengths, "lengths"))
    batches = bc.parse_int_list(args.batches, "batches")
    segment_size = args.segment_size or preset.segment_size
    if args.jitter >= min(lengths):
        raise SystemExit(f"--jitter {args.jitter} must be below the shortest length {min(lengths)}")
    import rmt

    settings = {
        "segment_size": segment_size,
        "mem_tokens": preset.num_mem_tokens if args.mem_tokens is None else args.mem_tokens,
        "new_tokens": args.new_tokens, "jitter": args.jitter, "repeats": args.repeats,
        "dtype": args.dtype, "compile": args.compile, "compile_backend": args.compile_backend,
        "isolation": isolation,
        "label": args.label, "rmt_path": str(Path(rmt.__file__).parent),
    }  # fmt: skip
    points = []
    for batch in batches:
        for length in lengths:
            params = {"device": device, "backbone": args.backbone, "batch": batch,
                      "length": length, "threads": args.threads, "seed": args.seed,
                      "profile": args.profile,
                      **{k: settings[k] for k in ("segment_size", "mem_tokens", "new_tokens",
                                                  "jitter", "repeats", "dtype", "compile",
                                                  "compile_backend")}}  # fmt: skip
            point = bc.run_point(Path(__file__).resolve(), measure, params, isolation, args.timeout)
            point.setdefault("batch", batch)
            point.setdefault("length", length)
            bc.log(f"[bench_eval] batch={batch} length={length}: {json.dumps(point)}")
            points.append(point)
    suffix = ("_compiled" if args.compile else "") + (f"_{args.label}" if args.label else "")
    return bc.finish(
        script="scripts/bench_eval.py", benchmark="batched_scoring",
        stem=f"eval_{args.backbone}_{device}{suffix}", args=args, preset=preset, device=device,
        settings=settings, load_at_start=load_at_start, started=started, points=points,
        targets={}, argv=argv, plot_fn=plot,
    )  # fmt: skip


if __name__ == "__main__":
    main()

"""Inference benchmark: seconds and peak memory to read an input and answer, against input length.

One point = `generate(max_new_tokens=N)` on a random prompt of L tokens (batch 1), under
`torch.inference_mode`, with SDPA attention (bf16 on a GPU that supports it). RMT reads the prompt
segment by segment through memory; the baseline is the same backbone architecture with enough
positions for full attention over the whole prompt. Each point runs in a fresh process so its peak
memory (RSS on CPU, `max_memory_allocated` on CUDA) is its own. Full-attention points that are
predicted (from the previous ones) not to fit the time or memory budget are skipped, with the reason
in the JSON.

    python scripts/bench_infer.py --lengths 1k,2k,4k,8k,16k,32k,64k,128k,256k,512k,1M

Prints one JSON document and writes `<out>/infer_<backbone>_<device>.{json,png}`.
Targets (issue 6): RMT time linear (time(1M)/time(128k) within 15% of 8), RMT memory flat,
RMT faster than full attention from 16k tokens on.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_common as bc  # noqa: E402

LINEAR_TOLERANCE = 0.15  # |time(1M) / time(128k) / 8 - 1|
FLAT_MEMORY = 1.1  # peak(longest) / peak(shortest) for RMT
FASTER_FROM = 16 * 1024


def build(p: dict):
    """The model for one point, on its device and dtype, and the callable that reads + answers."""
    import torch
    from transformers import AutoModelForCausalLM

    from rmt import RMTConfig, RMTForCausalLM

    preset = bc.PRESETS[p["backbone"]]
    seg, mem = p["segment_size"], p["mem_tokens"]
    if p["method"] == "rmt":
        bb = bc.backbone_config(preset, max(preset.max_positions, seg + 2 * mem + p["new_tokens"]))
        cfg = RMTConfig(backbone_config=bb, num_mem_tokens=mem, segment_size=seg)
        model = RMTForCausalLM(cfg)
        lm = model.backbone
    else:
        bb = bc.backbone_config(preset, max(preset.max_positions, p["length"] + p["new_tokens"]))
        model = lm = AutoModelForCausalLM.from_config(bb)
    dtype = bc.resolve_dtype(p["dtype"], p["device"])
    model = model.to(device=p["device"], dtype=dtype).eval()
    n = p["new_tokens"]

    def answer(ids: torch.Tensor) -> torch.Tensor:
        kwargs = dict(max_new_tokens=n, min_new_tokens=n, do_sample=False)
        if p["method"] == "rmt":
            return model.generate(ids, **kwargs)
        return model.generate(ids, attention_mask=torch.ones_like(ids), **kwargs)[:, ids.shape[1] :]

    return model, lm, answer


def measure(p: dict) -> dict:
    import torch

    if p["threads"]:
        torch.set_num_threads(p["threads"])
    torch.manual_seed(p["seed"])
    device = p["device"]
    model, lm, answer = build(p)
    vocab = bc.PRESETS[p["backbone"]].vocab_size
    ids = torch.randint(0, vocab - 1, (1, p["length"]), device=device)
    with torch.inference_mode():
        answer(ids[:, : min(p["length"], 4 * p["segment_size"])])  # warm-up: one-time init costs
        bc.sync(device)
        base_rss = bc.rss_mb()
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
            base_cuda = torch.cuda.memory_allocated() / 2**20
        times, cpus = [], []
        for _ in range(p["repeats"]):
            start, cpu = time.perf_counter(), time.process_time()
            new = answer(ids)
            bc.sync(device)
            times.append(time.perf_counter() - start)
            cpus.append(time.process_time() - cpu)
    result = {
        "status": "ok",
        "method": p["method"],
        "length": p["length"],
        "seconds": round(min(times), 4),
        "seconds_all": [round(t, 4) for t in times],
        "cpu_s": round(min(cpus), 4),  # process CPU time (all threads), robust to other load
        "new_tokens": int(new.shape[1]),
        "attn_implementation": getattr(lm.config, "_attn_implementation", None),
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        "peak_rss_mb": round(bc.peak_rss_mb(), 1),
        "base_rss_mb": round(base_rss, 1),
    }
    if device == "cuda":
        result["peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        result["base_mb"] = round(base_cuda, 1)
    else:
        result["peak_mb"], result["base_mb"] = result["peak_rss_mb"], result["base_rss_mb"]
    result["peak_over_base_mb"] = round(result["peak_mb"] - result["base_mb"], 1)
    return result


def predict_full(done: list[dict], length: int) -> tuple[float, float] | None:
    """(seconds, peak MiB) predicted for full attention at `length` from its measured points.

    Time is extrapolated quadratically (attention dominates long inputs); the memory above the
    baseline with the growth exponent of the last two points (2 when only one is known).
    """
    ok = [p for p in done if p.get("status") == "ok"]
    if not ok:
        return None
    seconds = ok[-1]["seconds"] * (length / ok[-1]["length"]) ** 2
    return seconds, bc.extrapolate_peak(ok, "length", length, max_exponent=2.0)


def check_targets(points: list[dict]) -> dict:
    ok = {(p["method"], p["length"]): p for p in points if p.get("status") == "ok"}
    rmt = sorted((p for (m, _), p in ok.items() if m == "rmt"), key=lambda p: p["length"])
    targets: dict = {}
    a, b = ok.get(("rmt", 128 * 1024)), ok.get(("rmt", 1024 * 1024))
    if a and b:
        ratio = b["seconds"] / a["seconds"]
        targets["rmt_linear_time_1M_over_128k"] = {
            "ratio": round(ratio, 3),
            "ratio_cpu_time": round(b["cpu_s"] / a["cpu_s"], 3),
            "ideal": 8,
            "tolerance": LINEAR_TOLERANCE,
            "met": abs(ratio / 8 - 1) <= LINEAR_TOLERANCE,
        }
    else:
        targets["rmt_linear_time_1M_over_128k"] = {"met": None, "reason": "needs 128k and 1M"}
    if len(rmt) >= 2:
        lo, hi = rmt[0], rmt[-1]
        targets["rmt_flat_memory"] = {
            "from_length": lo["length"],
            "to_length": hi["length"],
            "peak_ratio": round(hi["peak_mb"] / lo["peak_mb"], 3),
            "peak_growth_mb": round(hi["peak_mb"] - lo["peak_mb"], 1),
            "target": FLAT_MEMORY,
            "met": hi["peak_mb"] / lo["peak_mb"] <= FLAT_MEMORY,
        }
    else:
        targets["rmt_flat_memory"] = {"met": None, "reason": "needs two RMT lengths"}
    compared, compared_cpu = {}, {}
    for p in rmt:
        full = ok.get(("full", p["length"]))
        if full:
            compared[str(p["length"])] = round(full["seconds"] / p["seconds"], 3)
            compared_cpu[str(p["length"])] = round(full["cpu_s"] / p["cpu_s"], 3)
    from_16k = {k: v for k, v in compared.items() if int(k) >= FASTER_FROM}
    faster = [int(k) for k, v in compared.items() if v > 1]
    targets["rmt_faster_than_full_from_16k"] = {
        "speedup_by_length": compared,
        "speedup_by_length_cpu_time": compared_cpu,
        "first_length_rmt_faster": min(faster) if faster else None,
        "met": all(v > 1 for v in from_16k.values()) if from_16k else None,
        "compared_lengths_from_16k": len(from_16k),
    }
    return targets


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(10, 4))
    for method, style, label in (("rmt", "o-", "RMT"), ("full", "s--", "full attention")):
        pts = [p for p in result["points"] if p.get("status") == "ok" and p["method"] == method]
        if not pts:
            continue
        xs = [p["length"] for p in pts]
        ax_t.plot(xs, [p["seconds"] for p in pts], style, label=label)
        ax_m.plot(xs, [p["peak_mb"] for p in pts], style, label=label)
    mem_name = "peak RSS" if result["device"] == "cpu" else "peak allocated"
    for ax, ylabel in ((ax_t, "seconds to read + answer"), (ax_m, f"{mem_name} (MiB)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("input tokens")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    ax_t.set_yscale("log")
    ax_m.set_ylim(bottom=0)
    s = result["settings"]
    fig.suptitle(
        f"Read + answer {s['new_tokens']} tokens, {result['backbone']} backbone, {result['device']} "
        f"(segment {s['segment_size']}, {s['mem_tokens']} memory tokens)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv=None) -> argparse.Namespace:
    ap = bc.argument_parser(__doc__)
    ap.add_argument(
        "--lengths", default="1k,2k,4k,8k,16k,32k,64k,128k,256k,512k,1M", help="input lengths"
    )
    ap.add_argument("--methods", default="rmt,full", help="rmt, full or both (comma-separated)")
    ap.add_argument("--new-tokens", type=int, default=4, help="answer tokens to generate")
    ap.add_argument("--repeats", type=int, default=1, help="timed runs per point (min is kept)")
    ap.add_argument("--segment-size", type=int, default=None, help="default: the preset's")
    ap.add_argument("--mem-tokens", type=int, default=None, help="default: the preset's")
    ap.add_argument("--dtype", default="auto", help="auto (bf16 on CUDA) | fp32 | bf16")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    ap.add_argument(
        "--full-time-budget", type=float, default=300, help="skip full attention past this (s)"
    )
    ap.add_argument(
        "--memory-fraction",
        type=float,
        default=0.5,
        help="of free RAM / GPU memory a point may use",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per point")
    ap.add_argument("--out", default="outputs/bench", help="folder for the JSON and PNG")
    ap.add_argument("--quick", action="store_true", help="smoke test: tiny sizes, two lengths")
    ap.add_argument(
        "--isolate",
        default="auto",
        choices=bc.ISOLATION,
        help="where each point runs so its peak memory is its own: auto (fork on CPU, exec on\n"
        "CUDA), fork, exec (fresh interpreter), none (this process; peaks include earlier points)",
    )
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.quick:
        args.lengths = "256,512" if args.lengths == ap.get_default("lengths") else args.lengths
        args.segment_size = args.segment_size or 32
        args.mem_tokens = args.mem_tokens if args.mem_tokens is not None else 4
        args.new_tokens = min(args.new_tokens, 2)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods or set(methods) - {"rmt", "full"}:
        raise SystemExit(f"--methods {args.methods!r}: use rmt, full or rmt,full")
    args.methods = methods
    if args.new_tokens < 1 or args.repeats < 1:
        raise SystemExit("--new-tokens and --repeats must be >= 1")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    begun = bc.begin(args, measure)
    if begun is None:  # a child process: it measured its point
        return {}
    device, isolation, load_at_start, started = begun
    script = Path(__file__).resolve()
    if isolation == "fork":
        bc.preload("torch", "transformers", "rmt", "rmt.modeling.causal_lm")
    preset = bc.PRESETS[args.backbone]
    segment_size = args.segment_size or preset.segment_size
    mem_tokens = preset.num_mem_tokens if args.mem_tokens is None else args.mem_tokens
    lengths = sorted(bc.parse_int_list(args.lengths, "lengths"))
    settings = {
        "segment_size": segment_size,
        "mem_tokens": mem_tokens,
        "new_tokens": args.new_tokens,
        "batch_size": 1,
        "repeats": args.repeats,
        "dtype": args.dtype,
        "full_time_budget_s": args.full_time_budget,
        "memory_fraction": args.memory_fraction,
        "isolation": isolation,
    }
    points: list[dict] = []
    for method in args.methods:
        done: list[dict] = []
        for length in lengths:
            params = {
                "device": device,
                "backbone": args.backbone,
                "method": method,
                "length": length,
                "segment_size": segment_size,
                "mem_tokens": mem_tokens,
                "new_tokens": args.new_tokens,
                "repeats": args.repeats,
                "dtype": args.dtype,
                "threads": args.threads,
                "seed": args.seed,
            }
            skip = None
            predicted = predict_full(done, length) if method == "full" else None
            if predicted is not None:
                seconds, peak = predicted
                budget = bc.memory_budget_mb(device, args.memory_fraction)
                if seconds * args.repeats > args.full_time_budget:
                    skip = f"predicted {seconds:.0f} s > --full-time-budget {args.full_time_budget:.0f} s"
                elif peak > budget:
                    skip = f"predicted peak {peak:.0f} MiB > memory budget {budget:.0f} MiB"
            if done and done[-1].get("status") in ("skipped", "error", "timeout"):
                skip = f"a shorter length was not measured ({done[-1]['status']})"
            if skip:
                point = {"status": "skipped", "method": method, "length": length, "reason": skip}
            else:
                point = bc.run_point(script, measure, params, isolation, args.timeout)
                point.setdefault("method", method)
                point.setdefault("length", length)
            bc.log(f"[bench_infer] {method} length={length}: {json.dumps(point)}")
            done.append(point)
            points.append(point)
    return bc.finish(
        script="scripts/bench_infer.py",
        benchmark="read_and_answer",
        stem=f"infer_{args.backbone}_{device}",
        args=args,
        preset=preset,
        device=device,
        settings=settings,
        load_at_start=load_at_start,
        started=started,
        points=points,
        targets=check_targets(points),
        argv=argv,
        plot_fn=plot,
    )


if __name__ == "__main__":
    main()

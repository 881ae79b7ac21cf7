"""Training-step benchmark: tokens/s and peak memory against the number of segments.

One point = one full training step (forward over all segments, backward through them, AdamW step) on
a random input of `segments * segment_size` tokens with BABILong-style answer-only labels (only the
last few tokens carry a loss), with and without segment checkpointing. Each point runs in a fresh
process so that its peak memory (RSS on CPU, `max_memory_allocated` on CUDA) is its own.

    python scripts/bench_train.py --backbone tiny
    python scripts/bench_train.py --backbone gpt2-small --segments 1,2,4,8 --steps 1
    python scripts/bench_train.py --memory rmt,armt --segments 2,8   # ARMT's step time over RMT's

Prints one JSON document and writes `<out>/train_<backbone>_<device>[_<memories>].{json,png}`.
Targets (issue 6): with checkpointing, peak(32 segments) <= 1.3 x peak(2 segments), and
tokens/s within 1.4x of the non-checkpointed path (both on the first --memory). Issue 16: an ARMT
step takes at most 1.5x an RMT step with the same backbone and memory tokens.
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

MEMORY_TARGET = 1.3  # peak(32 segments) / peak(2 segments), with checkpointing
SPEED_TARGET = 1.4  # tokens/s without checkpointing / tokens/s with it
ARMT_TARGET = 1.5  # ARMT step time / RMT step time
MEMORIES = {"rmt": "tokens", "armt": "armt"}  # --memory name -> RMTConfig.memory_type


def measure(p: dict) -> dict:
    """Build the model and optimizer, run warm-up + timed training steps, report speed and peaks."""
    import torch

    from rmt import RMTConfig, RMTForCausalLM

    if p["threads"]:
        torch.set_num_threads(p["threads"])
    torch.manual_seed(p["seed"])
    device = p["device"]
    dtype = bc.resolve_dtype(p["dtype"], device)
    preset = bc.PRESETS[p["backbone"]]
    seg, mem = p["segment_size"], p["mem_tokens"]
    config = RMTConfig(
        backbone_config=bc.backbone_config(preset, max(preset.max_positions, seg + 2 * mem)),
        num_mem_tokens=mem,
        segment_size=seg,
        segment_checkpointing=p["checkpointing"],
        memory_type=MEMORIES[p["memory"]],
    )
    model = RMTForCausalLM(config).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    length = p["segments"] * seg
    ids = torch.randint(0, preset.vocab_size - 1, (p["batch_size"], length), device=device)
    labels = torch.full_like(ids, -100)
    labels[:, -p["answer_tokens"] :] = ids[:, -p["answer_tokens"] :]  # answer-only, as in BABILong
    autocast = torch.autocast(device, dtype=dtype, enabled=dtype != torch.float32)

    def step() -> float:
        with autocast:
            loss = model(ids, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    bc.sync(device)
    base_rss = bc.rss_mb()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base_cuda = torch.cuda.memory_allocated() / 2**20
    for _ in range(p["warmup"]):
        step()
    walls, cpus = [], []
    for _ in range(p["steps"]):
        bc.sync(device)
        wall, cpu = time.perf_counter(), time.process_time()
        loss = step()
        bc.sync(device)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    tokens = p["batch_size"] * length
    result = {
        "status": "ok",
        "memory": p["memory"],
        "segments": p["segments"],
        "checkpointing": p["checkpointing"],
        "tokens_per_step": tokens,
        "step_s": round(statistics.median(walls), 4),
        "tokens_per_s": round(tokens / statistics.median(walls), 1),
        "step_s_all": [round(t, 4) for t in walls],
        # CPU time of this process (all its threads): with --threads 1 it is what the step would take
        # on an idle core, whatever else the machine is running.
        "cpu_s": round(statistics.median(cpus), 4),
        "cpu_tokens_per_s": round(tokens / statistics.median(cpus), 1),
        "loss": round(loss, 4),
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


def check_targets(points: list[dict]) -> dict:
    """Evaluate the issues' targets on what was measured; say 'not measured' when points are missing."""
    first = points[0].get("memory", "rmt") if points else "rmt"
    ok = {
        (p["checkpointing"], p["segments"]): p
        for p in points
        if p.get("status") == "ok" and p.get("memory", "rmt") == first
    }
    targets: dict = {"armt_over_rmt_step_time": armt_target(points)}
    lo, hi = ok.get((True, 2)), ok.get((True, 32))
    if lo and hi:
        ratio = hi["peak_mb"] / lo["peak_mb"]
        ratio_inc = hi["peak_over_base_mb"] / max(lo["peak_over_base_mb"], 1e-9)
        targets["memory_32_over_2_checkpointed"] = {
            "ratio": round(ratio, 3),
            "ratio_over_base": round(ratio_inc, 3),
            "target": MEMORY_TARGET,
            "met": ratio <= MEMORY_TARGET,
        }
    else:
        targets["memory_32_over_2_checkpointed"] = {
            "met": None,
            "reason": "needs checkpointed points at 2 and 32 segments",
        }
    slowdowns, cpu_slowdowns = {}, {}
    for (ckpt, n), point in ok.items():
        other = ok.get((False, n))
        if ckpt and other and n >= 2:
            slowdowns[n] = round(other["tokens_per_s"] / point["tokens_per_s"], 3)
            cpu_slowdowns[n] = round(other["cpu_tokens_per_s"] / point["cpu_tokens_per_s"], 3)
    if slowdowns:
        worst = max(slowdowns.values())
        targets["throughput_slowdown_checkpointed"] = {
            "by_segments": {str(k): v for k, v in sorted(slowdowns.items())},
            "worst": worst,
            "by_segments_cpu_time": {str(k): v for k, v in sorted(cpu_slowdowns.items())},
            "worst_cpu_time": max(cpu_slowdowns.values()),
            "target": SPEED_TARGET,
            "met": worst <= SPEED_TARGET,
        }
    else:
        targets["throughput_slowdown_checkpointed"] = {
            "met": None,
            "reason": "needs points with and without checkpointing at the same segment count >= 2",
        }
    return targets


def armt_target(points: list[dict]) -> dict:
    """ARMT's step time over RMT's at each (checkpointing, segments) measured for both."""
    ok = {
        (p.get("memory", "rmt"), p["checkpointing"], p["segments"]): p
        for p in points
        if p.get("status") == "ok"
    }
    wall, cpu = {}, {}
    for (memory, ckpt, n), point in ok.items():
        rmt = ok.get(("rmt", ckpt, n))
        if memory == "armt" and rmt:
            key = f"{n} segments, checkpointing {'on' if ckpt else 'off'}"
            wall[key] = round(point["step_s"] / rmt["step_s"], 3)
            cpu[key] = round(point["cpu_s"] / rmt["cpu_s"], 3)
    if not wall:
        return {"met": None, "reason": "needs --memory rmt,armt"}
    return {
        "by_point": wall,
        "worst": max(wall.values()),
        "by_point_cpu_time": cpu,
        "worst_cpu_time": max(cpu.values()),
        "target": ARMT_TARGET,
        "met": max(wall.values()) <= ARMT_TARGET,
    }


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_speed, ax_mem) = plt.subplots(1, 2, figsize=(10, 4))
    memories = sorted({p.get("memory", "rmt") for p in result["points"]})
    styles = iter(["o-", "s--", "^-", "v--"])
    for memory, ckpt in [(m, c) for m in memories for c in (False, True)]:
        style = next(styles)
        pts = [
            p
            for p in result["points"]
            if p.get("status") == "ok"
            and p["checkpointing"] == ckpt
            and p.get("memory", "rmt") == memory
        ]
        if not pts:
            continue
        xs = [p["segments"] for p in pts]
        label = f"{memory}, " + ("segment checkpointing" if ckpt else "no checkpointing")
        ax_speed.plot(xs, [p["tokens_per_s"] for p in pts], style, label=label)
        ax_mem.plot(xs, [p["peak_mb"] for p in pts], style, label=label)
    mem_name = "peak RSS" if result["device"] == "cpu" else "peak allocated"
    for ax, ylabel in ((ax_speed, "tokens / s"), (ax_mem, f"{mem_name} (MiB)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("segments per sample")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend()
    ax_speed.set_ylim(bottom=0)
    ax_mem.set_ylim(bottom=0)
    fig.suptitle(
        f"RMT training step, {result['backbone']} backbone, {result['device']} "
        f"(segment {result['settings']['segment_size']}, {result['settings']['mem_tokens']} memory tokens)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument("--backbone", default="tiny", choices=sorted(bc.PRESETS))
    ap.add_argument("--segments", default="1,2,4,8,16,32", help="segment counts to measure")
    ap.add_argument("--checkpointing", default="both", choices=["both", "on", "off"])
    ap.add_argument("--memory", default="rmt", help="memory mechanisms to measure: rmt, armt")
    ap.add_argument("--steps", type=int, default=3, help="timed training steps per point")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps before timing")
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--answer-tokens", type=int, default=3, help="labelled tokens at the end")
    ap.add_argument("--segment-size", type=int, default=None, help="default: the preset's")
    ap.add_argument("--mem-tokens", type=int, default=None, help="default: the preset's")
    ap.add_argument("--dtype", default="auto", help="auto (bf16 autocast on CUDA) | fp32 | bf16")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    ap.add_argument(
        "--memory-fraction",
        type=float,
        default=0.5,
        help="of free RAM / GPU memory a point may use",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per point")
    ap.add_argument("--out", default="outputs/bench", help="folder for the JSON and PNG")
    ap.add_argument("--quick", action="store_true", help="smoke test: tiny sizes, 2 points each")
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
        args.segments = "1,2" if args.segments == ap.get_default("segments") else args.segments
        args.steps, args.warmup = 1, 1
        args.segment_size = args.segment_size or 16
        args.mem_tokens = args.mem_tokens if args.mem_tokens is not None else 4
    unknown = set(args.memory.split(",")) - set(MEMORIES)
    if unknown or not args.memory:
        raise SystemExit(f"--memory: use names from {', '.join(MEMORIES)} (got {args.memory!r})")
    for name in ("steps", "batch_size", "answer_tokens"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 1")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.child is not None:
        bc.report_child(measure(json.loads(args.child)))
        return {}
    device = bc.resolve_device(args.device)
    isolation = bc.resolve_isolation(args.isolate, device)
    load_at_start, started = list(os.getloadavg()), time.perf_counter()
    script = Path(__file__).resolve()
    if isolation == "fork":
        bc.preload("torch", "transformers", "rmt", "rmt.modeling.causal_lm")
    preset = bc.PRESETS[args.backbone]
    segment_size = args.segment_size or preset.segment_size
    mem_tokens = preset.num_mem_tokens if args.mem_tokens is None else args.mem_tokens
    if args.answer_tokens >= segment_size:
        raise SystemExit(f"--answer-tokens must be smaller than the segment size ({segment_size})")
    modes = {"both": [False, True], "on": [True], "off": [False]}[args.checkpointing]
    settings = {
        "segment_size": segment_size,
        "mem_tokens": mem_tokens,
        "batch_size": args.batch_size,
        "answer_tokens": args.answer_tokens,
        "steps": args.steps,
        "warmup": args.warmup,
        "dtype": args.dtype,
        "isolation": isolation,
        "optimizer": "AdamW",
        "memory_fraction": args.memory_fraction,
    }
    memories = args.memory.split(",")
    settings["memories"] = memories
    points = []
    for memory, ckpt in [(m, c) for m in memories for c in modes]:
        done: list[dict] = []
        for n in bc.parse_int_list(args.segments, "segments"):
            params = {
                "memory": memory,
                "device": device,
                "backbone": args.backbone,
                "segments": n,
                "checkpointing": ckpt,
                "segment_size": segment_size,
                "mem_tokens": mem_tokens,
                "batch_size": args.batch_size,
                "answer_tokens": args.answer_tokens,
                "steps": args.steps,
                "warmup": args.warmup,
                "dtype": args.dtype,
                "threads": args.threads,
                "seed": args.seed,
            }
            predicted = bc.extrapolate_peak(done, "segments", n, max_exponent=1.0)
            budget = bc.memory_budget_mb(device, args.memory_fraction)
            if predicted is not None and predicted > budget:
                point = {
                    "status": "skipped",
                    "memory": memory,
                    "segments": n,
                    "checkpointing": ckpt,
                    "reason": f"predicted peak {predicted:.0f} MiB > memory budget {budget:.0f} MiB",
                }
            else:
                point = bc.run_point(script, measure, params, isolation, args.timeout)
                point.setdefault("memory", memory)
                point.setdefault("segments", n)
                point.setdefault("checkpointing", ckpt)
            bc.log(
                f"[bench_train] memory={memory} checkpointing={ckpt} segments={n}: {json.dumps(point)}"
            )
            points.append(point)
            done.append(point)
    return bc.finish(
        script="scripts/bench_train.py",
        benchmark="train_step",
        stem=f"train_{args.backbone}_{device}"
        + ("" if memories == ["rmt"] else f"_{'-'.join(memories)}"),
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

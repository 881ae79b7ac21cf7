"""Training-step benchmark: tokens/s and peak memory against the number of segments.

One point = one full training step (forward over all segments, backward through them, AdamW step) on
a random input of `segments * segment_size` tokens with BABILong-style answer-only labels (only the
last few tokens carry a loss), with and without segment checkpointing. Each point runs in a fresh
process so that its peak memory (RSS on CPU, `max_memory_allocated` on CUDA) is its own.

    python scripts/bench_train.py --backbone tiny
    python scripts/bench_train.py --backbone gpt2-small --segments 1,2,4,8 --steps 1
    python scripts/bench_train.py --memory rmt,armt --segments 2,8   # ARMT's step time over RMT's
    python scripts/bench_train.py --baseline --steps 5 --segments 2,8,32   # vs the published algorithm
    python scripts/bench_train.py --schemes off,full,partial,mlp --segments 8,32   # recomputation

Prints one JSON document and writes `<out>/train_<backbone>_<device>[_<memories>].{json,png}`.
Targets (issue 6): with checkpointing, peak(32 segments) <= 1.3 x peak(2 segments), and
tokens/s within 1.4x of the non-checkpointed path (both on the first --memory). Issue 16: an ARMT
step takes at most 1.5x an RMT step with the same backbone and memory tokens. Issue 15
(`--baseline`): rmt's default against the published algorithm (all logits, no checkpointing) on the
same machine in the same call, with peak memory and MFU; `--schemes`: each recomputation scheme
(`rmt.modeling.checkpointing`) against none, in tokens/s, CPU time per step and peak memory.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
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
# --schemes name -> RMTConfig.segment_checkpointing. "partial" recomputes the first
# --partial-share of the segments (the free memory it sees is faked to just fit the rest).
SCHEMES = {"off": False, "full": True, "partial": "partial", "mlp": "mlp", "auto": "auto"}


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
    if p.get("num_layers"):
        preset = dataclasses.replace(preset, num_layers=p["num_layers"])
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
    baseline = p.get("algorithm") == "baseline"
    length = p["segments"] * seg
    ids = torch.randint(0, preset.vocab_size - 1, (p["batch_size"], length), device=device)
    labels = torch.full_like(ids, -100)
    labels[:, -p["answer_tokens"] :] = ids[:, -p["answer_tokens"] :]  # answer-only, as in BABILong
    autocast = torch.autocast(device, dtype=dtype, enabled=dtype != torch.float32)
    with fake_free_memory(model, ids, autocast, p):
        result = timed_steps(model, opt, ids, labels, autocast, baseline, p)
    result["model_flops_per_step"] = model_flops(
        model, result["tokens_per_step"], result.pop("head_rows")
    )
    return result


@contextlib.contextmanager
def fake_free_memory(model, ids, autocast, p: dict):
    """With `checkpointing="partial"`: the free memory the policy sees is just what the segments
    after the first `partial_share` of them need, so that it recomputes those (real free memory
    would make it recompute nothing on a big machine). Other schemes: nothing changes."""
    from rmt.modeling import checkpointing

    if p["checkpointing"] != "partial":
        yield
        return
    with autocast:
        step_bytes, _ = model._activation_estimate(model.make_plan(ids))
    r = min(max(1, round(p.get("partial_share", 0.5) * len(step_bytes))), len(step_bytes) - 1)
    real, free = checkpointing.free_memory, sum(step_bytes[r:]) / model.config.checkpointing_budget
    checkpointing.free_memory = lambda device: free
    try:
        yield
    finally:
        checkpointing.free_memory = real


def timed_steps(model, opt, ids, labels, autocast, baseline: bool, p: dict) -> dict:
    """Warm-up and timed training steps: speed (wall and process CPU time) and peak memory."""
    import torch

    from rmt.modeling.checkpointing import Recompute

    device = p["device"]

    def step() -> float:
        with autocast:
            loss = baseline_loss(model, ids, labels) if baseline else model(ids, labels=labels).loss
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
    tokens = ids.numel()
    with autocast:
        recompute = Recompute() if baseline else model._recompute(model.make_plan(ids))
    result = {
        "status": "ok",
        "algorithm": p.get("algorithm", "rmt"),
        "recomputed": recompute.scheme != "none",  # whether anything was recomputed in backward
        "scheme": recompute.scheme,  # what: none | partial | mlp | full
        "recomputed_segments": recompute.segments,  # partial/full: segments recomputed
        "head_rows": tokens if baseline else p["batch_size"] * p["answer_tokens"],
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


def baseline_loss(model, ids, labels):
    """The published RMT algorithm, written plainly: per segment `[memory ; segment ; memory]`
    through the backbone, the write positions' last hidden states become the next memory, logits at
    every position of every segment, one cross-entropy over them; all activations kept (no
    checkpointing). Same weights, dtype, attention and inputs as `model`; only the algorithm differs.
    """
    import torch

    from rmt.modeling.adapters import base_model

    backbone, m, size = model.backbone, model.config.num_mem_tokens, model.config.segment_size
    embed, head = backbone.get_input_embeddings(), backbone.get_output_embeddings()
    memory = model.memory.tokens.unsqueeze(0).expand(ids.shape[0], -1, -1)
    logits = []
    for start in range(0, ids.shape[1], size):
        seg = embed(ids[:, start : start + size])
        hidden = base_model(backbone)(
            inputs_embeds=torch.cat([memory, seg, memory], dim=1), use_cache=False
        ).last_hidden_state
        logits.append(head(hidden[:, m : m + seg.shape[1]]))
        memory = hidden[:, -m:] if m else memory
    logits = torch.cat(logits, dim=1)
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100
    )


def model_flops(model, tokens: int, head_rows: int) -> int:
    """Training FLOPs of a step: 6 x non-embedding parameters x input tokens, plus 6 x (hidden x
    vocab) for each row the LM head computes. Memory positions are not counted (conservative)."""
    import torch

    backbone = model.backbone
    embedding_ids = {id(backbone.get_output_embeddings().weight)}
    embedding_ids |= {id(m.weight) for m in backbone.modules() if isinstance(m, torch.nn.Embedding)}
    non_embedding = sum(p.numel() for p in backbone.parameters() if id(p) not in embedding_ids)
    hidden, vocab = backbone.get_input_embeddings().weight.shape[::-1]
    return 6 * non_embedding * tokens + 6 * hidden * vocab * head_rows


def check_targets(points: list[dict]) -> dict:
    """Evaluate the issues' targets on what was measured; say 'not measured' when points are missing."""
    first = points[0].get("memory", "rmt") if points else "rmt"
    ok = {
        (p["checkpointing"], p["segments"]): p
        for p in points
        if p.get("status") == "ok"
        and p.get("memory", "rmt") == first
        and p.get("algorithm", "rmt") == "rmt"
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
        if ckpt is True and other and n >= 2:
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
        if p.get("status") == "ok" and p.get("algorithm", "rmt") == "rmt"
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


MFU_NOTE = (
    "MFU = model FLOPs per step / step time / peak FLOPs; model FLOPs = 6 x non-embedding "
    "parameters x input tokens (memory positions not counted) + 6 x hidden x vocab per LM-head row "
    "computed (baseline: every position; rmt: the labelled ones). Peak: --peak-flops, else the "
    "card's dense bf16 figure from PEAK_FLOPS; a CPU has no meaningful peak unless --peak-flops "
    "is given (then MFU is null)."
)
# Dense (no sparsity) bf16 tensor-core peaks from the vendors' data sheets, by device-name match.
PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}


def peak_flops(device: str, given: float | None) -> float | None:
    """The peak FLOP/s MFU divides by: --peak-flops, or the CUDA card's bf16 figure, else None."""
    if given:
        return given
    if device != "cuda":
        return None
    import torch

    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_FLOPS.items() if k in name), None)


COMPARISON_HEAD = (
    "| segments | baseline tok/s | rmt default (auto) tok/s | rmt, checkpointing off tok/s "
    "| peak MiB baseline / default / off | MFU % baseline / default / off | default recomputed "
    "| CPU-time ratios default / off |"
)


def baseline_comparison(points: list[dict], peak: float | None) -> dict:
    """Per segment count: baseline vs rmt default (auto) vs rmt without checkpointing: tokens/s,
    ratios to the baseline, peak memory and MFU; plus the same as a Markdown table."""
    ok = {
        (p["algorithm"], p["checkpointing"], p["segments"]): p
        for p in points
        if p.get("status") == "ok"
    }
    rows, lines = [], [COMPARISON_HEAD, "|" + "---|" * 8]
    for n in sorted({p["segments"] for p in points}):
        trio = [
            ok.get(key + (n,)) for key in (("baseline", False), ("rmt", "auto"), ("rmt", False))
        ]
        if None in trio:
            continue
        for q in trio:
            q["mfu"] = (
                None if peak is None else round(q["model_flops_per_step"] / q["step_s"] / peak, 4)
            )
        base, auto, off = trio
        row = {
            "segments": n,
            "tokens_per_s": [q["tokens_per_s"] for q in trio],
            "default_over_baseline": round(auto["tokens_per_s"] / base["tokens_per_s"], 3),
            "off_over_baseline": round(off["tokens_per_s"] / base["tokens_per_s"], 3),
            "peak_mb": [q["peak_mb"] for q in trio],
            "mfu": [q["mfu"] for q in trio],
            "default_recomputed": auto["recomputed"],
            # process CPU time: on a loaded machine with --threads 1, what an idle core would take
            "cpu_time_ratios": [
                round(q["cpu_tokens_per_s"] / base["cpu_tokens_per_s"], 3) for q in (auto, off)
            ],
        }
        rows.append(row)
        mfu = " / ".join("-" if q["mfu"] is None else f"{100 * q['mfu']:.2f}" for q in trio)
        peaks = " / ".join(f"{q['peak_mb']:,.1f}" for q in trio)
        cpu = " / ".join(f"{r:.2f}x" for r in row["cpu_time_ratios"])
        lines.append(
            f"| {n} | {base['tokens_per_s']:,.1f} | {auto['tokens_per_s']:,.1f} "
            f"({row['default_over_baseline']:.2f}x) | {off['tokens_per_s']:,.1f} "
            f"({row['off_over_baseline']:.2f}x) | {peaks} | {mfu} "
            f"| {'yes' if auto['recomputed'] else 'no'} | {cpu} |"
        )
    return {"rows": rows, "table": "\n".join(lines), "peak_flops": peak, "mfu_counted_as": MFU_NOTE}


SCHEME_HEAD = (
    "| memory | segments | setting | scheme (segments recomputed) | tok/s (wall) | CPU s/step "
    "| CPU time / off | peak MiB over base | peak / off |"
)


def scheme_comparison(points: list[dict]) -> dict:
    """Per memory and segment count: each scheme's tokens/s, CPU time per step and peak memory
    (over the process's memory before the first step), and its CPU time and peak over "off"."""
    ok = [p for p in points if p.get("status") == "ok"]
    off = {(p["memory"], p["segments"]): p for p in ok if p["checkpointing"] is False}
    names = {value: name for name, value in SCHEMES.items()}
    rows, lines = [], [SCHEME_HEAD, "|" + "---|" * 9]
    for p in sorted(ok, key=lambda q: (q["memory"], q["segments"])):
        ref = off.get((p["memory"], p["segments"]))
        row = {
            "memory": p["memory"], "segments": p["segments"], "setting": names[p["checkpointing"]],
            "scheme": p["scheme"], "recomputed_segments": p["recomputed_segments"],
            "tokens_per_s": p["tokens_per_s"], "cpu_s": p["cpu_s"],
            "peak_over_base_mb": p["peak_over_base_mb"],
            "cpu_over_off": None if ref is None else round(p["cpu_s"] / ref["cpu_s"], 3),
            "peak_over_off": None if ref is None else round(
                p["peak_over_base_mb"] / max(ref["peak_over_base_mb"], 1e-9), 3
            ),
        }  # fmt: skip
        rows.append(row)
        ratio = lambda v: "-" if v is None else f"{v:.2f}x"  # noqa: E731
        lines.append(
            f"| {p['memory']} | {p['segments']} | {row['setting']} | {p['scheme']} "
            f"({p['recomputed_segments']}) | {p['tokens_per_s']:,.1f} | {p['cpu_s']:.4f} "
            f"| {ratio(row['cpu_over_off'])} | {p['peak_over_base_mb']:,.1f} "
            f"| {ratio(row['peak_over_off'])} |"
        )
    return {"rows": rows, "table": "\n".join(lines)}


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_speed, ax_mem) = plt.subplots(1, 2, figsize=(10, 4))
    ok = [p for p in result["points"] if p.get("status") == "ok"]
    series = {}  # label -> points, in measuring order
    for p in ok:
        if p.get("algorithm", "rmt") == "baseline":
            label = "published algorithm (baseline)"
        else:
            ckpt = {True: "segment checkpointing", False: "no checkpointing"}
            label = f"{p.get('memory', 'rmt')}, " + ckpt.get(
                p["checkpointing"], f"checkpointing {p['checkpointing']}"
            )
        series.setdefault(label, []).append(p)
    for style, (label, pts) in zip(
        ["o-", "s--", "^-", "v--", "D-", "x--"], series.items(), strict=False
    ):
        xs = [p["segments"] for p in pts]
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
    ap = bc.argument_parser(__doc__)
    ap.add_argument("--segments", default="1,2,4,8,16,32", help="segment counts to measure")
    ap.add_argument("--checkpointing", default="both", choices=["both", "on", "off"])
    ap.add_argument(
        "--schemes", default=None,
        help=f"recomputation schemes to compare (instead of --checkpointing): {', '.join(SCHEMES)}",
    )  # fmt: skip
    ap.add_argument(
        "--partial-share", type=float, default=0.5,
        help="--schemes partial: share of the segments recomputed (the earliest)",
    )  # fmt: skip
    ap.add_argument("--memory", default="rmt", help="memory mechanisms to measure: rmt, armt")
    ap.add_argument("--steps", type=int, default=3, help="timed training steps per point")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps before timing")
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--answer-tokens", type=int, default=3, help="labelled tokens at the end")
    ap.add_argument("--segment-size", type=int, default=None, help="default: the preset's")
    ap.add_argument("--mem-tokens", type=int, default=None, help="default: the preset's")
    ap.add_argument("--num-layers", type=int, default=None, help="default: the preset's")
    ap.add_argument("--dtype", default="auto", help="auto (bf16 autocast on CUDA) | fp32 | bf16")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    ap.add_argument(
        "--memory-fraction",
        type=float,
        default=0.5,
        help="of free RAM / GPU memory a point may use",
    )
    ap.add_argument(
        "--baseline",
        action="store_true",
        help="per segment count: the published algorithm (all logits, no checkpointing), rmt\n"
        "default (checkpointing auto) and rmt without checkpointing; ratio table and MFU",
    )
    ap.add_argument(
        "--peak-flops", type=float, default=None,
        help="peak FLOP/s for MFU (default: the CUDA card's bf16 peak; none on CPU)",
    )  # fmt: skip
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
    unknown = set((args.schemes or "off").split(",")) - set(SCHEMES)
    if unknown:
        raise SystemExit(f"--schemes: use names from {', '.join(SCHEMES)} (got {args.schemes!r})")
    if not 0 < args.partial_share < 1:
        raise SystemExit("--partial-share must be between 0 and 1 (e.g. 0.5)")
    if args.baseline and args.schemes:
        raise SystemExit("--baseline and --schemes are separate comparisons: give one of them")
    if args.baseline and args.memory != "rmt":
        raise SystemExit("--baseline compares the published algorithm with --memory rmt only")
    if args.baseline and args.steps < 5 and not args.quick:
        raise SystemExit(
            "--baseline reports medians of at least 5 timed steps: use --steps 5 or more"
        )
    for name in ("steps", "batch_size", "answer_tokens"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 1")
    return args


def run_or_skip(script, params: dict, done: list[dict], device, isolation, args) -> dict:
    """Measure one point, or skip it when its peak predicted from `done` exceeds the budget."""
    predicted = bc.extrapolate_peak(done, "segments", params["segments"], max_exponent=1.0)
    budget = bc.memory_budget_mb(device, args.memory_fraction)
    keys = {k: params[k] for k in ("memory", "algorithm", "segments", "checkpointing")}
    if predicted is not None and predicted > budget:
        reason = f"predicted peak {predicted:.0f} MiB > memory budget {budget:.0f} MiB"
        return {"status": "skipped", **keys, "reason": reason}
    point = bc.run_point(script, measure, params, isolation, args.timeout)
    for key, value in keys.items():
        point.setdefault(key, value)
    return point


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
    if args.num_layers:
        preset = dataclasses.replace(preset, num_layers=args.num_layers)
    segment_size = args.segment_size or preset.segment_size
    mem_tokens = preset.num_mem_tokens if args.mem_tokens is None else args.mem_tokens
    if args.answer_tokens >= segment_size:
        raise SystemExit(f"--answer-tokens must be smaller than the segment size ({segment_size})")
    modes = {"both": [False, True], "on": [True], "off": [False]}[args.checkpointing]
    if args.schemes:
        modes = [SCHEMES[name] for name in args.schemes.split(",")]
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
        "partial_share": args.partial_share,
    }
    memories = args.memory.split(",")
    settings["memories"] = memories
    runs = [(m, "rmt", c) for m in memories for c in modes]
    if args.baseline:
        runs = [("rmt", "baseline", False), ("rmt", "rmt", "auto"), ("rmt", "rmt", False)]
    segments = bc.parse_int_list(args.segments, "segments")
    order = (  # the points compared at one segment count back to back (a loaded machine drifts)
        [(r, n) for n in segments for r in runs]
        if args.baseline or args.schemes
        else [(r, n) for r in runs for n in segments]
    )
    points, done = [], {r: [] for r in runs}  # done: earlier points of a run, to predict peaks
    for (memory, algorithm, ckpt), n in order:
        params = {
            "memory": memory, "algorithm": algorithm, "device": device,
            "backbone": args.backbone, "segments": n, "checkpointing": ckpt,
            "segment_size": segment_size, "mem_tokens": mem_tokens,
            "batch_size": args.batch_size, "answer_tokens": args.answer_tokens,
            "steps": args.steps, "warmup": args.warmup, "dtype": args.dtype,
            "threads": args.threads, "seed": args.seed, "partial_share": args.partial_share,
            "num_layers": args.num_layers,
        }  # fmt: skip
        point = run_or_skip(
            script, params, done[(memory, algorithm, ckpt)], device, isolation, args
        )
        bc.log(f"[bench_train] {algorithm} memory={memory} checkpointing={ckpt} segments={n}: "
               f"{json.dumps(point)}")  # fmt: skip
        points.append(point)
        done[(memory, algorithm, ckpt)].append(point)
    targets = check_targets(points)
    if args.baseline:
        targets["baseline_comparison"] = baseline_comparison(
            points, peak_flops(device, args.peak_flops)
        )
        bc.log(targets["baseline_comparison"]["table"])
        bc.log(MFU_NOTE)
    if args.schemes:
        targets["schemes"] = scheme_comparison(points)
        bc.log(targets["schemes"]["table"])
    return bc.finish(
        script="scripts/bench_train.py",
        benchmark="train_step",
        stem=f"train_{args.backbone}_{device}"
        + ("" if memories == ["rmt"] else f"_{'-'.join(memories)}")
        + ("_baseline" if args.baseline else "")
        + ("_schemes" if args.schemes else ""),
        args=args,
        preset=preset,
        device=device,
        settings=settings,
        load_at_start=load_at_start,
        started=started,
        points=points,
        targets=targets,
        argv=argv,
        plot_fn=plot,
    )


if __name__ == "__main__":
    main()

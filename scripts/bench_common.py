"""Shared helpers for the benchmark scripts: devices, backbone presets, peak memory, child processes.

Every measured point runs in a fresh Python process, because a process's peak RSS (`ru_maxrss`) only
ever grows: measuring several configurations in one process would report the largest one for all.
The parent only plans the points, collects the children's JSON lines and writes the summary and plot.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

CHILD_PREFIX = "BENCH_RESULT "  # the child prints exactly one line starting with this


@dataclass(frozen=True)
class BackbonePreset:
    """A random-init backbone plus the RMT settings the benchmarks use with it."""

    family: str
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    segment_size: int
    num_mem_tokens: int
    max_positions: int  # of the RMT backbone; the full-attention baseline gets as many as it needs


PRESETS = {
    # The tiny default backbone: small enough that the per-segment Python overhead shows up.
    "tiny": BackbonePreset("llama", 512, 128, 2, 8, 128, 16, max_positions=256),
    # backbone/tiny_d64 (the default recipe's): the same at hidden size 64.
    "tiny_d64": BackbonePreset("llama", 512, 64, 2, 8, 128, 16, max_positions=256),
    # GPT-2 small sized (124M parameters with its 1024 positions), random init: no download needed.
    "gpt2-small": BackbonePreset("gpt2", 50257, 768, 12, 12, 512, 16, max_positions=1024),
}


def backbone_config(preset: BackbonePreset, max_positions: int):
    """The preset's HF config with a given position limit (large for the full-attention baseline)."""
    from rmt.modeling.backbones import tiny_backbone_config

    return tiny_backbone_config(
        preset.family,
        vocab_size=preset.vocab_size,
        hidden_size=preset.hidden_size,
        num_layers=preset.num_layers,
        num_heads=preset.num_heads,
        max_positions=max_positions,
        eos_token_id=preset.vocab_size - 1,
        pad_token_id=preset.vocab_size - 1,
    )


def parse_length(text: str) -> int:
    """'1k' -> 1024, '1M' -> 1048576, '500' -> 500 (powers of two, as BABILong names its lengths)."""
    m = re.fullmatch(r"\s*(\d+)\s*([kKmM]?)\s*", text)
    if not m:
        raise ValueError(
            f"length {text!r}: use an integer with an optional k or M suffix, e.g. 16k"
        )
    scale = {"": 1, "k": 1024, "m": 1024 * 1024}[m.group(2).lower()]
    return int(m.group(1)) * scale


def parse_int_list(text: str, name: str) -> list[int]:
    try:
        values = [parse_length(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise SystemExit(f"--{name}: {err}") from None
    if not values or min(values) < 1:
        raise SystemExit(
            f"--{name}: give a comma-separated list of positive integers, got {text!r}"
        )
    return values


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit(
            "--device cuda: no CUDA device is visible to torch; use --device cpu or auto"
        )
    if name not in ("cpu", "cuda"):
        raise SystemExit(f"--device {name!r}: use auto, cpu or cuda")
    return name


def resolve_dtype(name: str, device: str):
    """bf16 on a GPU that supports it, fp32 elsewhere (CPU bf16 matmuls are not faster everywhere)."""
    import torch

    if name == "auto":
        if device == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    table = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if name not in table:
        raise SystemExit(f"--dtype {name!r}: use auto, fp32, bf16 or fp16")
    return table[name]


def rss_mb() -> float:
    """Resident memory now (psutil; /proc where psutil is missing, as on a bare GPU image)."""
    try:
        import psutil
    except ImportError:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    return psutil.Process().memory_info().rss / 2**20


def peak_rss_mb() -> float:
    """High-water mark of this process's resident memory (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def memory_budget_mb(device: str, fraction: float) -> float:
    """The memory one point may use: a fraction of the GPU, or of the RAM free right now (shared box)."""
    if device == "cuda":
        import torch

        return torch.cuda.get_device_properties(0).total_memory / 2**20 * fraction
    import psutil

    return psutil.virtual_memory().available / 2**20 * fraction


def extrapolate_peak(done: list[dict], x_key: str, x: float, max_exponent: float) -> float | None:
    """Peak memory predicted at `x` from the measured points (`peak_mb`, `base_mb`, `peak_over_base_mb`).

    The part above the baseline grows like x**e, with e taken from the last two points (clamped to
    [0, max_exponent]) or max_exponent when only one point is known; None without any point.
    """
    ok = [p for p in done if p.get("status") == "ok"]
    if not ok:
        return None
    last = ok[-1]
    exponent = max_exponent
    if len(ok) >= 2 and ok[-2][x_key] != last[x_key]:
        prev = ok[-2]
        grow = max(last["peak_over_base_mb"], 1.0) / max(prev["peak_over_base_mb"], 1.0)
        ratio = last[x_key] / prev[x_key]
        exponent = min(max_exponent, max(0.0, math.log(grow) / math.log(ratio)))
    return last["base_mb"] + max(last["peak_over_base_mb"], 1.0) * (x / last[x_key]) ** exponent


def sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def machine_info(device: str, threads: int | None = None) -> dict:
    """What the numbers were measured on, including the load other processes put on the machine."""
    import torch

    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": threads if threads is not None else torch.get_num_threads(),
        "python": platform.python_version(),
        "device": device,
    }
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    try:
        import psutil

        info["ram_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    if hasattr(os, "getloadavg"):
        info["load_avg_1_5_15"] = [round(v, 2) for v in os.getloadavg()]
    if hasattr(os, "nice"):
        info["nice"] = os.nice(0)  # scheduling priority of the benchmark (others may share the box)
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def run_child(script: Path, params: dict, timeout: float | None) -> dict:
    """Run `script --child '<json>'` in a fresh interpreter and return the dict it reports."""
    cmd = [sys.executable, str(script), "--child", json.dumps(params)]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "reason": f"child ran past {timeout:.0f} s"}
    for line in proc.stdout.splitlines():
        if line.startswith(CHILD_PREFIX):
            return json.loads(line[len(CHILD_PREFIX) :])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
    reason = "killed (out of memory?)" if proc.returncode in (-9, 137) else "failed"
    return {
        "status": "error",
        "reason": f"{reason}: exit code {proc.returncode}",
        "stderr_tail": tail,
        "wall_s": round(time.perf_counter() - start, 2),
    }


ISOLATION = ("auto", "fork", "exec", "none")


def resolve_isolation(name: str, device: str) -> str:
    """fork (cheap: no re-import) on CPU under Linux; exec where CUDA or the OS rules fork out."""
    if name not in ISOLATION:
        raise SystemExit(f"--isolate {name!r}: use one of {', '.join(ISOLATION)}")
    if name == "auto":
        return "fork" if device == "cpu" and sys.platform == "linux" else "exec"
    if name == "fork" and device == "cuda":
        raise SystemExit(
            "--isolate fork cannot be used with CUDA (it does not survive fork); use exec"
        )
    return name


def preload(*modules: str) -> None:
    """Import the heavy modules once in the parent so that forked children start warm."""
    import importlib

    for name in modules:
        importlib.import_module(name)


def _forked_entry(fn, params: dict, conn) -> None:
    try:
        conn.send(fn(params))
    except BaseException as err:  # report any failure of the point instead of hanging the parent
        conn.send({"status": "error", "reason": f"{type(err).__name__}: {err}"})
    finally:
        conn.close()


def run_forked(fn, params: dict, timeout: float | None) -> dict:
    """Run `fn(params)` in a forked child (its own peak RSS, no re-import) and return its dict.

    The parent must not have run torch ops before forking (OpenMP pools do not survive fork); the
    benchmark parents only plan points and collect results.
    """
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_forked_entry, args=(fn, params, send))
    proc.start()
    send.close()
    try:
        if recv.poll(timeout):
            try:
                return recv.recv()
            except EOFError:
                pass  # the child died before sending: reported below from its exit code
        else:
            proc.kill()
            return {"status": "timeout", "reason": f"child ran past {timeout:.0f} s"}
    finally:
        proc.join()
        recv.close()
    reason = "killed (out of memory?)" if proc.exitcode == -9 else "failed"
    return {"status": "error", "reason": f"{reason}: exit code {proc.exitcode}"}


def run_point(script: Path, fn, params: dict, isolation: str, timeout: float | None) -> dict:
    """Measure one point: in a forked child, a fresh interpreter (`exec`) or this process (`none`)."""
    if isolation == "fork":
        return run_forked(fn, params, timeout)
    if isolation == "exec":
        return run_child(script, params, timeout)
    try:  # in this process: a failing point (out of memory...) must not end the others
        return fn(params)
    except Exception as err:  # noqa: BLE001
        return {"status": "error", "reason": f"{type(err).__name__}: {err}"[:500]}
    finally:
        _release_cuda()


def _release_cuda() -> None:
    """Free what a point left in the CUDA cache, so that the next one starts from the same state."""
    import gc

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def argument_parser(doc: str | None) -> argparse.ArgumentParser:
    """The arguments every model benchmark shares: ``--device`` and ``--backbone`` (a preset)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument("--backbone", default="tiny", choices=sorted(PRESETS))
    return ap


def begin(args, measure) -> tuple[str, str, list[float], float] | None:
    """The start of every benchmark's ``main``: in a child process (``--child``), measure its one
    point, report it and return None; in the parent, return (device, isolation, the load averages
    and the clock at the start)."""
    if args.child is not None:
        report_child(measure(json.loads(args.child)))
        return None
    device = resolve_device(args.device)
    isolation = resolve_isolation(args.isolate, device)
    return device, isolation, list(os.getloadavg()), time.perf_counter()


def report_child(result: dict) -> None:
    print(CHILD_PREFIX + json.dumps(result), flush=True)


def write_outputs(out_dir: Path, stem: str, result: dict) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{stem}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def finish(
    *, benchmark: str, script: str, stem: str, args, preset, device: str, settings: dict, load_at_start,
    started: float, points: list[dict], targets: dict, argv, plot_fn,
) -> dict:  # fmt: skip
    """Assemble a benchmark's JSON document, write it with its plot, print it, and return it."""
    result = {
        "benchmark": benchmark,
        "backbone": args.backbone,
        "preset": vars(preset),
        "device": device,
        "settings": settings,
        "machine": {
            **machine_info(device, args.threads or None),
            "load_avg_at_start": [round(v, 2) for v in load_at_start],
        },
        "total_wall_s": round(time.perf_counter() - started, 1),
        "points": points,
        "targets": targets,
        "command": " ".join(["python", script, *(argv or sys.argv[1:])]),
    }
    out = Path(args.out)
    result["json_path"] = str(out / f"{stem}.json")
    result["plot_path"] = str(out / f"{stem}.png")
    write_outputs(out, stem, result)
    try:
        plot_fn(result, out / f"{stem}.png")
    except ImportError as err:  # matplotlib missing (a bare GPU image): the JSON is what counts
        log(f"no plot: {err}")
        result["plot_path"] = None
    print(json.dumps(result, indent=2))
    return result


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _fmt(value, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def scoring_table(result: dict, mem: str) -> str:
    """`scripts/bench_eval.py`'s points: samples/s of batched scoring by batch and length."""
    head = (f"| batch | input tokens | samples/s (wall) | samples per CPU-s | tokens/s (wall) "
            f"| s (wall) | s (CPU) | {mem} | load avg before / after |")  # fmt: skip
    rows = [head, "|" + "---|" * 9]
    for p in result["points"]:
        if p.get("status") != "ok":
            rows.append(f"| {p['batch']} | {p['length']:,} | {p.get('status')}: "
                        f"{p.get('reason', '')} |||||||")  # fmt: skip
            continue
        load = f"{p['load_avg_before'][0]} / {p['load_avg_after'][0]}"
        rows.append(
            f"| {p['batch']} | {p['length']:,} | {_fmt(p['samples_per_s'], 3)} | "
            f"{_fmt(p['samples_per_cpu_s'], 3)} | {_fmt(p['tokens_per_s'], 0)} | "
            f"{_fmt(p['seconds'], 3)} | {_fmt(p['cpu_s'], 3)} | "
            f"{_fmt(p.get('peak_mb', p.get('peak_rss_mb')))} | {load} |"
        )
    return "\n".join(rows)


def to_markdown(result: dict) -> str:
    """The points of a benchmark JSON as a Markdown table (what docs/performance.md shows)."""
    mem = "peak RSS MiB" if result["device"] == "cpu" else "peak alloc MiB"
    if result["benchmark"] == "batched_scoring":
        return scoring_table(result, mem)
    if result["benchmark"] == "train_step":
        head = (
            f"| memory | segments | checkpointing | tokens/step | step s (wall) | tokens/s (wall) "
            f"| step s (CPU) | tokens/s (CPU) | {mem} | above setup MiB |"
        )
        rows = [head, "|" + "---|" * 10]
        for p in result["points"]:
            ckpt = {True: "on", False: "off"}.get(p["checkpointing"], p["checkpointing"])
            memory = "baseline" if p.get("algorithm") == "baseline" else p.get("memory", "rmt")
            where = f"| {memory} | {p['segments']} | {ckpt} | "
            if p.get("status") != "ok":
                rows.append(f"{where}{p.get('status')}: {p.get('reason', '')} ||||||| ")
                continue
            rows.append(
                f"{where}"
                f"{p['tokens_per_step']} | {_fmt(p['step_s'], 3)} | {_fmt(p['tokens_per_s'])} | "
                f"{_fmt(p.get('cpu_s'), 3)} | {_fmt(p.get('cpu_tokens_per_s'))} | {_fmt(p['peak_mb'])} | "
                f"{_fmt(p['peak_over_base_mb'])} |"
            )
        return "\n".join(rows)
    head = f"| method | input tokens | seconds (wall) | seconds (CPU) | {mem} | above setup MiB |"
    rows = [head, "|" + "---|" * 6]
    for p in result["points"]:
        name = "RMT" if p["method"] == "rmt" else "full attention"
        if p.get("status") != "ok":
            rows.append(
                f"| {name} | {p['length']:,} | {p.get('status')}: {p.get('reason', '')} ||||"
            )
            continue
        rows.append(
            f"| {name} | {p['length']:,} | {_fmt(p['seconds'], 3)} | {_fmt(p.get('cpu_s'), 3)} | "
            f"{_fmt(p['peak_mb'])} | {_fmt(p['peak_over_base_mb'])} |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    # python scripts/bench_common.py outputs/bench/*.json  -> Markdown tables of the measured points
    for name in sys.argv[1:]:
        print(f"### {name}\n")
        print(to_markdown(json.loads(Path(name).read_text())) + "\n")

"""Steps/s of a real `rmt-train` recipe, data building and validation included.

What issue 15's "default tiny rmt-train" target counts: the no-argument recipe (experiment
memory_demo: tiny Llama, 2 segments of 32 tokens, batch 32, auxiliary LM loss, validation every
100 steps) run by the real Trainer for a fixed time budget, on whatever device rmt-train picks.

    python scripts/bench_recipe.py --seconds 60                          # the default recipe
    python scripts/bench_recipe.py --seconds 60 trainer.num_workers=0    # any rmt-train override
    python scripts/bench_recipe.py --seconds 30 --threads 1 --out outputs/bench

Prints one JSON document (also written to `<out>/recipe_<device>.json`): optimizer steps in the
timed `fit`, its wall seconds and steps/s (setup and the final validation excluded, periodic
validation included), process CPU seconds and the CPU-time steps/s (on a shared machine, what
an idle machine would do), the CPU seconds of the batch-building workers, the mean share of
wall time the loop waited for batches (`data_wait_share` of metrics.jsonl), the load average
before and after. Needs hydra-core and omegaconf (the recipe is a Hydra config).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's rmt, whatever is installed


def compose(overrides: list[str]):
    """The composed `rmt-train` config with these overrides (Hydra's compose API, no CLI)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    import rmt.config.schema  # noqa: F401  (registers the schemas and resolvers)

    with initialize_config_dir(config_dir=str(ROOT / "rmt" / "conf"), version_base="1.3"):
        return hydra_compose(config_name="train", overrides=overrides)


def tensorboard_or_stub() -> bool:
    """True when TensorBoard is installed; else a no-op `SummaryWriter` stands in (a bare GPU
    image may lack it; metrics.jsonl, which this script reads, is written either way)."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        import types

        class SummaryWriter:  # the four methods rmt.train.metrics calls
            def __init__(self, *args, **kwargs) -> None: ...
            def add_scalar(self, *args, **kwargs) -> None: ...
            def flush(self) -> None: ...
            def close(self) -> None: ...

        sys.modules["torch.utils.tensorboard"] = types.SimpleNamespace(SummaryWriter=SummaryWriter)
        return False
    return True


def run(seconds: float, overrides: list[str], run_dir: Path) -> dict:
    """Set up the recipe's Trainer, time `fit` for `seconds`, clean up; return the numbers."""
    from rmt.train.trainer import Trainer

    cfg = compose(["trainer.progress_bar=false", *overrides])
    cfg.output_dir = str(run_dir)
    trainer = Trainer(cfg)
    trainer.setup()
    # the budget counts from the start of fit, not of setup (which the recipe's budget includes)
    trainer.cfg.trainer.max_minutes = (trainer.elapsed() + seconds) / 60
    load_before = list(os.getloadavg())
    wall, cpu = time.perf_counter(), time.process_time()
    stopped = trainer.fit()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    steps = trainer.progress.step
    trainer.cleanup(stopped)
    workers_cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
    waits = [r["data_wait_share"] for r in rows if "data_wait_share" in r]
    return {
        "steps": steps,
        "fit_wall_s": round(wall, 2),
        "steps_per_s": round(steps / wall, 3),
        "fit_cpu_s": round(cpu, 2),
        "cpu_steps_per_s": round(steps / cpu, 3),
        "workers_cpu_s": round(workers_cpu.ru_utime + workers_cpu.ru_stime, 2),
        "data_wait_share_mean": round(statistics.fmean(waits), 4) if waits else None,
        "validations": sum(1 for r in rows if r.get("split") == "valid"),
        "stopped": stopped,
        "device": str(trainer.accelerator.device),
        "precision": trainer.accelerator.mixed_precision,
        "num_workers": cfg.trainer.num_workers,
        "load_avg_before": [round(v, 2) for v in load_before],
        "load_avg_after": [round(v, 2) for v in os.getloadavg()],
    }


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0, help="time budget of the timed fit")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    ap.add_argument("--out", default="outputs/bench", help="folder for recipe_<device>.json")
    ap.add_argument("overrides", nargs="*", help="rmt-train overrides, e.g. trainer.num_workers=0")
    args = ap.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    tensorboard = tensorboard_or_stub()
    with tempfile.TemporaryDirectory(prefix="rmt-recipe-") as tmp:
        result = run(args.seconds, args.overrides, Path(tmp) / "run")
    result.update(
        tensorboard=tensorboard,
        seconds=args.seconds, overrides=args.overrides, torch=torch.__version__,
        torch_threads=torch.get_num_threads(), cpus=os.cpu_count(),
        gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    )  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = "cuda" if result["device"].startswith("cuda") else "cpu"
    (out / f"recipe_{device}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()

"""Everything ``rmt-eval`` does: check the checkpoints, build each run's task, score the grid,
write the tables and plots.

Each checkpoint is evaluated on its own run's task (``task.type`` of its config.yaml), with
rmt-eval's data keys applied by the task (:meth:`rmt.tasks.base.Task.eval_config`), so a new
task needs no change here.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

import rmt
from rmt.eval import checkpoint as ckpt_io
from rmt.eval import perplexity
from rmt.eval.config import checkpoint_list, validate
from rmt.eval.grid import Grid, evaluate_model, unique_names
from rmt.eval.plots import plot_heatmap, plot_segment_perplexity
from rmt.eval.results import EvalResult, format_table, group_by_series, write_csv, write_json
from rmt.eval.setting import resolve
from rmt.modeling.factory import memory_summary
from rmt.run import override_key, read_overrides
from rmt.tasks.base import Task, build_task, task_class
from rmt.tasks.generative import baseline_window


def resolve_device(name: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"device={name}: no CUDA device is visible; use device=cpu or device=auto."
        )
    return name


def display_names(checks) -> list[str]:
    """Names for the table: run folder names, or a sweep job's swept overrides.

    Jobs of a multirun are numbered folders (``0``, ``1``, ...) next to each other; a job is
    named by the overrides whose value differs between the jobs of its sweep
    (``memory.num_tokens=4``), which is what a reader of the table wants to know.
    """
    names = unique_names([ck.run_dir or ck.best_dir for ck in checks])
    swept = [_swept_overrides(ck.run_dir) for ck in checks]
    if all(swept) and len(set(swept)) == len(swept):
        return swept
    return names


def _job_overrides(job: Path) -> list[str] | None:
    if not job.name.isdigit() or not (job / ".hydra" / "overrides.yaml").is_file():
        return None
    return read_overrides(job)


def _swept_overrides(run_dir: Path | None) -> str | None:
    """``"k=v ..."`` for the keys that differ between this job and its sibling jobs."""
    mine = _job_overrides(run_dir) if run_dir is not None else None
    if mine is None:
        return None
    siblings = [o for p in run_dir.parent.iterdir() if p.is_dir() and (o := _job_overrides(p))]
    values: dict[str, set[str]] = {}
    for ovr in siblings:
        for item in ovr:
            values.setdefault(override_key(item), set()).add(item.partition("=")[2])
    swept = [item for item in mine if len(values.get(override_key(item), ())) > 1]
    return " ".join(swept) or None


def heatmap_filename(row: EvalResult) -> str:
    """``heatmap_<model>.png``, or ``heatmap_<model>_baseline.png`` for the plain backbone."""
    stem = row.model if row.mode == "rmt" else f"{row.model}_{row.mode}"
    return "heatmap_" + "".join(c if c.isalnum() or c in "-_." else "_" for c in stem) + ".png"


def _inside(child: Path, parent: Path) -> bool:
    child, parent = child.resolve(), parent.resolve()
    return child == parent or parent in child.parents


def run_task(run_config: DictConfig, cfg: DictConfig, tokenizer) -> Task:
    """The run's own task with rmt-eval's data keys applied (tasks, data source, background,
    scoring)."""
    task_cfg = run_config.task
    cls = task_class(task_cfg.get("type") or "babilong")  # configs before task.type were BABILong
    task_cfg = OmegaConf.merge(OmegaConf.structured(cls.config_class), task_cfg)
    return build_task(
        cls.eval_config(task_cfg, cfg), tokenizer=tokenizer,
        segment_size=OmegaConf.select(run_config, "segment.size", default=1),
        seed=OmegaConf.select(run_config, "trainer.seed", default=0),
    )  # fmt: skip


def main_value(rows) -> float | None:
    """What a sweeper optimises: the first checkpoint's mean accuracy (answer tasks) or mean
    perplexity (LM) over its cells."""
    first = [r for r in rows if r.model == rows[0].model and getattr(r, "mode", "rmt") == "rmt"]
    key = "accuracy" if isinstance(rows[0], EvalResult) else "perplexity"
    return sum(getattr(r, key) for r in first) / len(first) if first else None


def run_eval(cfg) -> list:
    """Everything ``rmt-eval`` does: check, load, score, write files, print the table.

    Writes into ``cfg.output_dir`` only (never into a checkpoint folder): ``results.csv``,
    ``results.json``, ``results.md``, and per checkpoint ``heatmap_<name>[_baseline].png`` plus
    ``predictions.jsonl`` (answer tasks) or one ``perplexity_by_segment.png`` (task=lm).
    """
    validate(cfg)
    out = Path(cfg.output_dir or Path("outputs") / "eval" / time.strftime("%Y-%m-%d/%H-%M-%S"))
    checks = _checked(cfg, out)  # every folder before any model is loaded: fail in seconds
    names = list(cfg.names) or display_names(checks)
    device = resolve_device(cfg.device)
    out.mkdir(parents=True, exist_ok=True)
    predictions = out / "predictions.jsonl" if cfg.save_predictions else None
    if predictions is not None and predictions.exists():
        predictions.unlink()
    rows: list[EvalResult] = []
    models_meta = []
    for name, ck in zip(names, checks, strict=True):
        model_rows, meta = _evaluate_checkpoint(cfg, name, ck, device, predictions)
        if rows and type(rows[0]) is not type(model_rows[0]):
            raise ValueError(
                "rmt-eval: the checkpoints belong to tasks scored differently (answers vs "
                "perplexity); evaluate them in separate rmt-eval calls."
            )
        rows += model_rows
        models_meta.append(meta)
        if isinstance(model_rows[0], EvalResult):
            for series, series_rows in group_by_series(model_rows).items():
                plot_heatmap(series_rows, out / heatmap_filename(series_rows[0]), title=series)
    meta = {
        "rmt_version": rmt.__version__,
        "torch_version": torch.__version__,
        "device": device,
        "models": models_meta,
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    if isinstance(rows[0], EvalResult):
        write_csv(rows, out / "results.csv")
        write_json(rows, out / "results.json", meta=meta)
        (out / "results.md").write_text(format_table(rows) + "\n")
        print(format_table(rows, fmt="text", percent=True))
    else:
        perplexity.write_results(rows, out, meta=meta)
        plot_segment_perplexity(rows, out / "perplexity_by_segment.png")
        print(perplexity.format_table(rows, fmt="text"))
    print(f"results: {out}")
    return rows


def _checked(cfg, out: Path) -> list[ckpt_io.Checkpoint]:
    checks = [ckpt_io.check(p, strict_version=cfg.strict_version) for p in checkpoint_list(cfg)]
    for ck in checks:
        for folder in (ck.given, ck.best_dir):
            if _inside(out, folder):
                raise ValueError(
                    f"output folder {out} is inside the checkpoint folder {folder}; evaluation "
                    "never writes into a checkpoint. Choose another hydra.run.dir."
                )
    return checks


def _evaluate_checkpoint(cfg, name: str, ck, device: str, predictions: Path | None):
    """Score one checkpoint on its run's task; returns its rows and its entry of meta.models."""
    model, tokenizer = ckpt_io.load(ck, device=device, dtype=cfg.dtype)
    if cfg.compile:
        model.compile_segments()  # the same switch as trainer.compile: a warned eager fallback
    task = run_task(ck.run_config, cfg, tokenizer)
    setting = resolve(cfg, ck.run_config, ck.trainer_state, task)
    task.check_subtasks(setting.tasks)
    cells = task.eval_cells(setting.tasks, setting.lengths)
    items = lambda cell: task.eval_items(  # noqa: E731
        cell, samples=setting.samples, seed=setting.seed, split=setting.split,
        stage=setting.stage, tasks=setting.order,
    )  # fmt: skip
    if task.eval_kind == "perplexity":
        if cfg.baseline:
            raise ValueError(
                "baseline=true scores answers of the plain backbone; for task=lm compare with a "
                "run trained with memory.num_tokens=0 instead (checkpoints=[<run>,<no-memory run>])."
            )
        rows = perplexity.evaluate_perplexity(
            model, task, cells, items, name=name, checkpoint=str(ck.best_dir),
            batch_size=setting.batch_size, max_batch_tokens=cfg.max_batch_tokens,
            progress=cfg.progress_bar,
        )  # fmt: skip
        return rows, _meta(cfg, name, ck, model, task, setting)
    modes = ("rmt", "baseline") if cfg.baseline else ("rmt",)
    with open(predictions, "a") if predictions else contextlib.nullcontext() as pred_file:
        grid = Grid(
            task, name, str(ck.best_dir), modes=modes, batch_size=setting.batch_size,
            max_batch_tokens=cfg.max_batch_tokens, max_new_tokens=setting.max_new_tokens,
            predictions=pred_file,
        )  # fmt: skip
        rows = evaluate_model(model, grid, cells, items, progress=cfg.progress_bar,
                              samples_per_cell=setting.samples)  # fmt: skip
    return rows, _meta(cfg, name, ck, model, task, setting)


def _meta(cfg, name: str, ck, model, task: Task, setting) -> dict:
    """The entry of ``meta.models`` in results.json for one checkpoint."""
    return {
        "name": name,
        "checkpoint": str(ck.best_dir),
        "rmt_version": ck.trainer_state.get("rmt_version"),
        "step": ck.trainer_state.get("step"),
        "best_metric": ck.trainer_state.get("best_metric"),
        "metric_name": ck.trainer_state.get("metric_name"),
        **memory_summary(model),
        "segment_size": model.config.segment_size,
        "scoring": task.scoring,
        "setting": asdict(setting),
        "baseline_window": baseline_window(model) if cfg.baseline else None,
    }

"""The evaluation grid: score a model on every (task, length) cell by generation through memory.

Scoring is by generation, as in BABILong: the prompt (haystack + question + answer marker) is
read segment by segment through memory, the model generates a short answer greedily, and the
decoded text is judged by :func:`rmt.data.scoring.compare_answers` (and exact match).

Memory stays flat in the input length because nothing here holds more than one batch of
prompts: samples are built lazily, a batch at a time, and long lengths get smaller batches
(``max_batch_tokens``; one sample at a time beyond it). The model reads the prompt one segment
at a time under ``no_grad`` and returns only the new tokens, so no per-token hidden states or
logits over the whole input are ever materialised.

``baseline`` mode scores the same backbone without memory: plain Hugging Face ``generate`` on
the last tokens of the prompt that fit the backbone's position limit (the question and answer
marker are at the end, so they are always kept), which is what a plain model of that context
size can read.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import torch

from rmt.eval.results import EvalResult

MODES = ("rmt", "baseline")


@dataclass(frozen=True)
class EvalItem:
    """One prompt to score.

    Attributes:
        task: bAbI task name (selects the label set used by the BABILong scoring rule).
        index: sample number within its (task, length) cell, for the predictions file.
        prompt_ids: token ids of haystack + question + answer marker (no answer).
        target: the answer string, as in bAbI (``"n,w"`` for qa19).
        question: the question text (labels named in it are ignored by the scoring rule).
    """

    task: str
    index: int
    prompt_ids: Sequence[int] | torch.Tensor
    target: str
    question: str


@dataclass
class CellScore:
    correct: int = 0
    exact: int = 0
    n: int = 0
    seconds: float = 0.0


def batch_size_for(length_tokens: int, batch_size: int, max_batch_tokens: int) -> int:
    """Samples per batch at one length: at most ``max_batch_tokens`` prompt tokens, at least one."""
    if length_tokens <= 0:
        return batch_size
    return max(1, min(batch_size, max_batch_tokens // length_tokens))


def left_pad(prompts: Sequence[torch.Tensor], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack 1-D prompts into a left-padded batch and its attention mask."""
    width = max(p.numel() for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - p.numel() :] = p
        mask[i, width - p.numel() :] = 1
    return ids, mask


def baseline_window(model) -> int | None:
    """Prompt tokens the backbone alone can read: its position limit (None when unlimited)."""
    return model.config.max_backbone_positions()


@torch.no_grad()
def generate_answers(
    model,
    prompts: Sequence[torch.Tensor],
    *,
    mode: str,
    max_new_tokens: int,
    pad_id: int,
    eos_id: int | None,
) -> list[list[int]]:
    """Greedy answers for a batch of prompts, as token lists cut at the first eos.

    ``mode="rmt"`` reads each prompt through memory (``model.generate``); ``"baseline"`` runs the
    backbone alone on the last ``limit - max_new_tokens`` prompt tokens.
    """
    device = next(model.parameters()).device
    gen_kwargs = {"max_new_tokens": max_new_tokens, "do_sample": False, "pad_token_id": pad_id}
    if eos_id is not None:
        gen_kwargs["eos_token_id"] = eos_id
    if mode == "rmt":
        if len(prompts) == 1:  # long inputs come one at a time: a view, no padded copy
            ids, mask = prompts[0][None], torch.ones_like(prompts[0][None])
        else:
            ids, mask = left_pad(prompts, pad_id)
        new = model.generate(ids.to(device), mask.to(device), **gen_kwargs)
    elif mode == "baseline":
        limit = baseline_window(model)
        if limit is not None:
            keep = limit - max_new_tokens
            if keep < 1:
                raise ValueError(
                    f"baseline: max_new_tokens={max_new_tokens} leaves no room for the prompt in the "
                    f"backbone's {limit} positions; lower max_new_tokens."
                )
            prompts = [p[-keep:] for p in prompts]
        ids, mask = left_pad(prompts, pad_id)
        out = model.backbone.generate(
            input_ids=ids.to(device), attention_mask=mask.to(device), **gen_kwargs
        )
        new = out[:, ids.shape[1] :]
    else:
        raise ValueError(f"mode={mode!r}: unknown; use one of {MODES}")
    answers = []
    for row in new.tolist():
        if eos_id is not None and eos_id in row:
            row = row[: row.index(eos_id)]
        answers.append(row)
    return answers


def evaluate_model(
    model,
    tokenizer,
    *,
    name: str,
    checkpoint: str,
    tasks: Sequence[str],
    lengths: Sequence[tuple[str, int]],
    make_items: Callable[[str, str, int], Iterable[EvalItem]],
    batch_size: int = 16,
    max_batch_tokens: int = 65536,
    max_new_tokens: int = 8,
    modes: Sequence[str] = ("rmt",),
    progress: bool = True,
    samples_per_cell: int | None = None,
    predictions_path: str | Path | None = None,
) -> list[EvalResult]:
    """Score ``model`` on every (task, length) cell, in every mode; one result row per cell.

    Args:
        lengths: ``(label, tokens)`` pairs, e.g. ``[("0k", 0), ("4k", 4096)]``.
        make_items: ``(task, label, tokens) -> iterable of EvalItem``, consumed lazily so that
            only one batch of prompts exists at a time.
        modes: ``"rmt"`` and/or ``"baseline"``; every batch is built once and scored in each mode.
        samples_per_cell: only sizes the progress bar.
        predictions_path: if given, one JSON line per sample and mode (output text, verdict).
    """
    from tqdm.auto import tqdm

    from rmt.data.scoring import compare_answers, exact_match

    for mode in modes:
        if mode not in MODES:
            raise ValueError(f"mode={mode!r}: unknown; use one of {MODES}")
    pad_id = tokenizer.pad_token_id
    eos_id = tokenizer.eos_token_id
    if pad_id is None:
        pad_id = eos_id if eos_id is not None else 0
    model.eval()
    total = samples_per_cell * len(tasks) * len(lengths) if samples_per_cell else None
    bar = tqdm(total=total, desc=name, unit="sample", disable=not progress, dynamic_ncols=True)
    pred_file = open(predictions_path, "a") if predictions_path else None  # noqa: SIM115
    rows: list[EvalResult] = []
    try:
        for task in tasks:
            for label, tokens in lengths:
                scores = {mode: CellScore() for mode in modes}
                size = batch_size_for(tokens, batch_size, max_batch_tokens)
                items = iter(make_items(task, label, tokens))
                while True:
                    t0 = time.perf_counter()
                    batch = list(islice(items, size))  # builds only this batch
                    if not batch:
                        break
                    prompts = [torch.as_tensor(it.prompt_ids, dtype=torch.long) for it in batch]
                    build_s = time.perf_counter() - t0
                    for mode in modes:
                        t1 = time.perf_counter()
                        answers = generate_answers(
                            model,
                            prompts,
                            mode=mode,
                            max_new_tokens=max_new_tokens,
                            pad_id=pad_id,
                            eos_id=eos_id,
                        )
                        score = scores[mode]
                        for item, answer in zip(batch, answers, strict=True):
                            text = tokenizer.decode(answer, skip_special_tokens=True).strip()
                            ok = compare_answers(item.target, text, item.question, item.task)
                            em = exact_match(item.target, text)
                            score.correct += int(ok)
                            score.exact += int(em)
                            score.n += 1
                            if pred_file:
                                rec = {
                                    "model": name,
                                    "mode": mode,
                                    "task": item.task,
                                    "length": label,
                                    "index": item.index,
                                    "prompt_tokens": len(item.prompt_ids),
                                    "target": item.target,
                                    "output": text,
                                    "correct": bool(ok),
                                    "exact_match": bool(em),
                                }
                                pred_file.write(json.dumps(rec) + "\n")
                        score.seconds += build_s + time.perf_counter() - t1
                    bar.update(len(batch))
                    del prompts, batch  # free this batch before the next one is built
                    first = scores[modes[0]]
                    bar.set_postfix(
                        task=task, length=label, acc=f"{100 * first.correct / first.n:.0f}"
                    )
                for mode in modes:
                    s = scores[mode]
                    if s.n == 0:
                        raise ValueError(
                            f"no samples for task {task} at length {label}; the data source is "
                            "empty for this cell (check data.path, tasks and lengths)."
                        )
                    rows.append(
                        EvalResult(
                            model=name,
                            mode=mode,
                            task=task,
                            length=label,
                            length_tokens=tokens,
                            accuracy=100.0 * s.correct / s.n,
                            exact_match=100.0 * s.exact / s.n,
                            correct=s.correct,
                            n=s.n,
                            seconds=round(s.seconds, 3),
                            checkpoint=checkpoint,
                        )
                    )
    finally:
        bar.close()
        if pred_file:
            pred_file.close()
    return rows


def resolve_device(name: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"device={name}: no CUDA device is visible; use device=cpu or device=auto."
        )
    return name


def unique_names(paths: Sequence[Path]) -> list[str]:
    """Shortest distinct path suffixes: run folders often share their ``<time>`` name."""
    depth = 1
    while True:
        names = ["/".join(p.parts[-depth:]) for p in paths]
        if len(set(names)) == len(names) or depth >= max(len(p.parts) for p in paths):
            return names
        depth += 1


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
    import yaml

    file = job / ".hydra" / "overrides.yaml"
    if not job.name.isdigit() or not file.is_file():
        return None
    return [str(o) for o in (yaml.safe_load(file.read_text()) or [])]


def _swept_overrides(run_dir: Path | None) -> str | None:
    """``"k=v ..."`` for the keys that differ between this job and its sibling jobs."""
    mine = _job_overrides(run_dir) if run_dir is not None else None
    if mine is None:
        return None
    siblings = [o for p in run_dir.parent.iterdir() if p.is_dir() and (o := _job_overrides(p))]
    values: dict[str, set[str]] = {}
    for ovr in siblings:
        for item in ovr:
            key, _, value = item.partition("=")
            values.setdefault(key, set()).add(value)
    swept = [item for item in mine if len(values.get(item.partition("=")[0], ())) > 1]
    return " ".join(swept) or None


def heatmap_filename(row: EvalResult) -> str:
    """``heatmap_<model>.png``, or ``heatmap_<model>_baseline.png`` for the plain backbone."""
    stem = row.model if row.mode == "rmt" else f"{row.model}_{row.mode}"
    return "heatmap_" + "".join(c if c.isalnum() or c in "-_." else "_" for c in stem) + ".png"


def _inside(child: Path, parent: Path) -> bool:
    child, parent = child.resolve(), parent.resolve()
    return child == parent or parent in child.parents


def run_eval(cfg) -> list[EvalResult]:
    """Everything ``rmt-eval`` does: check, load, score, write files, print the table.

    Writes into ``cfg.output_dir`` only (never into a checkpoint folder): ``results.csv``,
    ``results.json``, ``results.md``, ``heatmap_<name>[_baseline].png`` per checkpoint and
    ``predictions.jsonl``.
    """
    from omegaconf import OmegaConf

    import rmt
    from rmt.data.dataset import parse_length
    from rmt.data.scoring import TASK_LABELS
    from rmt.eval import checkpoint as ckpt_io
    from rmt.eval.config import checkpoint_list, validate
    from rmt.eval.data import item_factory
    from rmt.eval.plots import plot_heatmap
    from rmt.eval.results import format_table, group_by_series, write_csv, write_json
    from rmt.modeling.factory import memory_summary

    validate(cfg)
    out = Path(cfg.output_dir or Path("outputs") / "eval" / time.strftime("%Y-%m-%d/%H-%M-%S"))
    checks = [
        ckpt_io.check(p, strict_version=cfg.strict_version) for p in checkpoint_list(cfg)
    ]  # every folder is checked before any model is loaded: fail in seconds, not after hours
    for ck in checks:
        for folder in (ck.given, ck.best_dir):
            if _inside(out, folder):
                raise ValueError(
                    f"output folder {out} is inside the checkpoint folder {folder}; evaluation "
                    "never writes into a checkpoint. Choose another hydra.run.dir."
                )
    names = list(cfg.names) or display_names(checks)
    device = resolve_device(cfg.device)
    lengths = [(str(length), parse_length(str(length))) for length in cfg.lengths]
    modes = ("rmt", "baseline") if cfg.baseline else ("rmt",)
    out.mkdir(parents=True, exist_ok=True)
    predictions = out / "predictions.jsonl" if cfg.save_predictions else None
    if predictions is not None and predictions.exists():
        predictions.unlink()

    rows: list[EvalResult] = []
    models_meta = []
    for name, ck in zip(names, checks, strict=True):
        tasks = list(cfg.tasks) if cfg.tasks is not None else list(ck.run_config.task.tasks)
        unknown = [t for t in tasks if t not in TASK_LABELS]
        if unknown:
            raise ValueError(
                f"tasks: unknown task names {unknown}; use names from {sorted(TASK_LABELS)}, "
                "e.g. tasks=[qa1,qa2]."
            )
        background = ck.run_config.task.background
        if cfg.background.kind is not None:  # an explicit background replaces the run's
            background = cfg.background
        position = cfg.position if cfg.position is not None else ck.run_config.task.position
        model, tokenizer = ckpt_io.load(ck, device=device, dtype=cfg.dtype)
        make_items = item_factory(
            cfg.data,
            tokenizer=tokenizer,
            background=background,
            position=[float(p) for p in position],
            samples=cfg.samples,
            seed=cfg.seed,
            background_seed=OmegaConf.select(ck.run_config, "trainer.seed", default=0),
        )
        model_rows = evaluate_model(
            model,
            tokenizer,
            name=name,
            checkpoint=str(ck.best_dir),
            tasks=tasks,
            lengths=lengths,
            make_items=make_items,
            batch_size=cfg.batch_size,
            max_batch_tokens=cfg.max_batch_tokens,
            max_new_tokens=cfg.max_new_tokens,
            modes=modes,
            progress=cfg.progress_bar,
            samples_per_cell=cfg.samples,
            predictions_path=predictions,
        )
        rows += model_rows
        for series, series_rows in group_by_series(model_rows).items():
            plot_heatmap(series_rows, out / heatmap_filename(series_rows[0]), title=series)
        models_meta.append(
            {
                "name": name,
                "checkpoint": str(ck.best_dir),
                "rmt_version": ck.trainer_state.get("rmt_version"),
                "step": ck.trainer_state.get("step"),
                "best_metric": ck.trainer_state.get("best_metric"),
                "metric_name": ck.trainer_state.get("metric_name"),
                **memory_summary(model),
                "segment_size": model.config.segment_size,
                "baseline_window": baseline_window(model) if cfg.baseline else None,
            }
        )
        del model

    meta = {
        "rmt_version": rmt.__version__,
        "torch_version": torch.__version__,
        "device": device,
        "models": models_meta,
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    write_csv(rows, out / "results.csv")
    write_json(rows, out / "results.json", meta=meta)
    (out / "results.md").write_text(format_table(rows) + "\n")
    print(format_table(rows, fmt="text"))
    print(f"results: {out}")
    return rows

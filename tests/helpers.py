"""Helpers shared by test modules (importable as ``helpers`` in every pytest import mode).

pyproject.toml puts ``tests/`` on ``sys.path`` (``[tool.pytest.ini_options] pythonpath``), so
``from helpers import ...`` works under ``--import-mode=prepend`` and ``importlib`` alike; test
modules never import each other. The repository root is on the path too, so in-process tests
import the checkout under test, and :func:`checkout_env` gives subprocesses the same.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"
CONF_DIR = str(REPO / "rmt" / "conf")

# A run that takes a few seconds on CPU: the debug preset without console noise.
FAST = ["debug=fast", "trainer.progress_bar=false"]


# ------------------------------------------------------------------------------ subprocesses
def checkout_env(**extra: str) -> dict[str, str]:
    """Environment for a subprocess that must run this checkout, not an installed ``rmt``.

    ``PYTHONPATH`` starts with the repository root (and ``tests/``, for ``train_probe``), so
    ``python -m rmt.cli.train`` imports the code under test whatever ``pip install -e`` points at.
    """
    path = os.pathsep.join([str(REPO), str(TESTS), *filter(None, [os.environ.get("PYTHONPATH")])])
    return {
        **os.environ,
        "PYTHONPATH": path,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HYDRA_FULL_ERROR": "0",
        "OMP_NUM_THREADS": "1",  # tiny models; the test machine's cores are shared
        **extra,
    }


def python_module(module: str) -> list[str]:
    """``python -m <module>`` with this interpreter (never a console script found on PATH)."""
    return [sys.executable, "-m", module]


def launch_two_processes(root: Path, name: str, engine: list[str], args: list[str], **env: str):
    """``accelerate launch`` of ``rmt-train`` with 2 CPU processes; output to ``<root>/<name>.out``.

    ``engine``: ``["--multi_gpu"]`` (DDP over gloo) runs this checkout's ``rmt.cli.train``;
    FSDP/DeepSpeed flags run it through tests/engine_cpu_probe.py (see there why).
    """
    program = (
        ["-m", "rmt.cli.train"]
        if engine == ["--multi_gpu"]
        else [str(TESTS / "engine_cpu_probe.py")]
    )
    cmd = [*python_module("accelerate.commands.launch"), *engine, "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", "0", *program, *args]  # fmt: skip
    log = Path(root) / f"{name}.out"
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=root, env=checkout_env(**env), stdout=out,
                                stderr=subprocess.STDOUT)  # fmt: skip
    return proc, log


def finish(proc, log: Path) -> tuple[int, str]:
    """Exit status and output of a :func:`launch_two_processes` run (killed after 10 minutes)."""
    try:
        return proc.wait(timeout=600), log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()


@contextmanager
def logging_restored() -> Iterator[None]:
    """Undo the logging setup of an in-process Hydra run (``rmt-train``/``rmt-eval`` main).

    Hydra's job logging replaces the root handlers with one writing to the current (captured)
    stdout and one writing to the run's ``train.log``. Left in place they outlive the test whose
    capture stream they hold, and every later log call printed "--- Logging error ---".
    Handlers added inside are closed; the previous handlers and levels come back.
    """

    def loggers() -> list[logging.Logger]:
        known = logging.Logger.manager.loggerDict.values()
        return [logging.getLogger(), *(lg for lg in known if isinstance(lg, logging.Logger))]

    before = {id(lg): (list(lg.handlers), lg.level, lg.propagate, lg.disabled) for lg in loggers()}
    try:
        yield
    finally:
        for lg in loggers():
            handlers, level, propagate, disabled = before.get(id(lg), ([], None, None, None))
            for handler in list(lg.handlers):
                if handler not in handlers:
                    lg.removeHandler(handler)
                    handler.close()
            if level is not None:
                lg.handlers[:] = handlers
                lg.setLevel(level)
                lg.propagate, lg.disabled = propagate, disabled


def main_in_process(monkeypatch, *args: str, cli: str = "rmt-train") -> int:
    """Run a CLI's real Hydra ``main`` in this process (no interpreter start); its exit status."""
    import importlib

    module = importlib.import_module(
        {"rmt-train": "rmt.cli.train", "rmt-eval": "rmt.cli.eval"}[cli]
    )
    monkeypatch.setattr(sys, "argv", [cli, *args])
    with logging_restored():
        try:
            module.main()
        except SystemExit as exit_:
            return int(exit_.code or 0)
    return 0


# ------------------------------------------------------------------------------- run folders
def events(run: Path, split: str) -> list[dict]:
    """The ``metrics.jsonl`` events of one split ("train" or "valid") of a run folder."""
    lines = (Path(run) / "metrics.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["split"] == split]


def snapshot(folder: Path) -> dict:
    """Every file under ``folder`` with its size and modification time."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
    }


# ------------------------------------------------------------------------------ bAbI files
PEOPLE = ("Mary", "John", "Daniel", "Sandra")
ROOMS = ("bathroom", "hallway", "garden", "office", "kitchen", "bedroom")


def qa1_story(k: int, moves: int) -> str:
    """A real-format qa1 story of ``moves`` facts, a question after every second fact."""
    lines, facts, line_no = [], {}, 0
    for i in range(moves):
        person, room = PEOPLE[(k + i) % 4], ROOMS[(k + 5 * i) % 6]  # first facts differ
        line_no += 1
        lines.append(f"{line_no} {person} went to the {room}.")
        facts[person] = (room, line_no)
        if i % 2 == 1:
            room, support = facts[person]
            line_no += 1
            lines.append(f"{line_no} Where is {person}? \t{room}\t{support}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------- configs
def compose_config(overrides=(), config_name: str = "train"):
    """Compose ``rmt/conf/<config_name>.yaml`` with Hydra's compose API (no CLI, no run folder)."""
    from hydra import compose, initialize_config_dir

    import rmt.config.schema  # noqa: F401  (registers the schemas)

    if config_name == "eval":
        from rmt.eval.config import register_configs

        register_configs()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides))


def compose_eval(overrides: list[str]):
    return compose_config(overrides, config_name="eval")


def run_eval_inprocess(overrides: list[str], out: Path):
    """``rmt-eval`` without Hydra's main: compose, point at ``out``, evaluate."""
    from rmt.eval.evaluate import run_eval

    cfg = compose_eval(overrides)
    cfg.output_dir = str(out)
    return run_eval(cfg)


# ------------------------------------------------------------------------------ checkpoints
def make_checkpoint(
    run_dir: Path,
    *,
    seed: int = 0,
    tasks=("qa1", "qa2"),
    segment_size: int = 64,
    num_mem_tokens: int = 4,
    max_positions: int = 128,
    state: dict | None = None,
) -> Path:
    """A run folder as rmt-train leaves it: config.yaml, .hydra/, best/ (model, tokenizer, ...)."""
    import torch
    from omegaconf import OmegaConf

    import rmt
    from rmt import RMTConfig, RMTForCausalLM
    from rmt.config.schema import typed
    from rmt.modeling.backbones import tiny_backbone_config
    from rmt.run import save_best
    from rmt.tasks.babilong.tokenizer import build_tokenizer

    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    bb = tiny_backbone_config(
        "llama",
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_layers=1,
        num_heads=2,
        max_positions=max_positions,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = RMTForCausalLM(
        RMTConfig(backbone_config=bb, num_mem_tokens=num_mem_tokens, segment_size=segment_size)
    )
    cfg = typed({})
    cfg.task.tasks = list(tasks)
    cfg.output_dir = str(run_dir)
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text("[]\n")
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    full_state = {"rmt_version": rmt.__version__, "step": 7, "best_metric": 0.25}
    full_state.update(state or {})
    save_best(run_dir / "best", model=model, tokenizer=tokenizer, cfg=cfg, state=full_state)
    return run_dir


# ------------------------------------------------------------------------------- generation
def generate_with_logits(model, ids, mask=None, steps=3):
    """Greedy `model.generate`; returns (new tokens [B, T], logits of each step [B, T, V])."""
    import torch

    out = model.generate(
        ids, attention_mask=mask, max_new_tokens=steps, do_sample=False,
        output_logits=True, return_dict_in_generate=True,
    )  # fmt: skip
    return out.sequences, torch.stack(out.logits, dim=1)


def forward_greedy(model, prompt, steps):
    """Greedy decoding from `forward` alone: run prompt + tokens so far, take the last argmax."""
    import torch

    seq, logits = prompt, []
    for _ in range(steps):
        last = model(seq[None], return_logits=True).logits[0, -1]
        logits.append(last)
        seq = torch.cat([seq, last.argmax()[None]])
    return seq[len(prompt) :], torch.stack(logits)


def pad_batch(seqs, side="left"):
    """1-D token sequences stacked into `(ids, attention_mask)`, padded on `side`."""
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.zeros(len(seqs), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, s in enumerate(seqs):
        cols = slice(width - len(s), width) if side == "left" else slice(0, len(s))
        ids[i, cols], mask[i, cols] = s, 1
    return ids, mask


def written_memory_grads(model, ids, labels):
    """Forward/backward recording the memory written by every segment (through the core's
    ``_run_segment``); returns their gradients and the learned first memory's gradient."""
    written = []
    original = model._run_segment

    def recording(*args):
        new_mem, sel = original(*args)
        new_mem.retain_grad()
        written.append(new_mem)
        return new_mem, sel

    model._run_segment = recording
    try:
        model(ids, labels=labels).loss.backward()
    finally:
        del model._run_segment
    return [w.grad for w in written], model.memory.tokens.grad


def recompute_partially(monkeypatch, model, ids, segments: int, attention_mask=None) -> None:
    """Makes `segment_checkpointing="partial"` (and `auto` without the "mlp" scheme) recompute
    exactly the first `segments` steps of a forward over `ids`: the fake free memory is what the
    later steps' activations need under the model's budget."""
    from rmt.modeling import checkpointing

    step_bytes, _ = model._activation_estimate(model.make_plan(ids, attention_mask))
    free = sum(step_bytes[segments:]) / model.config.checkpointing_budget
    monkeypatch.setattr(checkpointing, "free_memory", lambda device: free)


def grads_of(model, ids, labels) -> tuple:
    """(loss tensor, {name: gradient}) of one training forward + backward of `model`."""
    loss = model.train()(ids, labels=labels).loss
    loss.backward()
    return loss.detach(), {
        n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None
    }

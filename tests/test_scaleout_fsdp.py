"""FSDP2 with two CPU processes (gloo): sharded last/, consolidated best/, the same training
as DDP, exact resume.

Accelerate builds FSDP state only for accelerator processes, so the runs go through
tests/engine_cpu_probe.py, which switches a CPU run's Accelerate state to FSDP with the plugin
``accelerate launch --use_fsdp`` configured; from there on it is Accelerate's and torch's own
FSDP2 code (``fully_shard``, ``torch.distributed.checkpoint``). The runs cross a curriculum
stage, so the next stage loads the previous best model into sharded parameters.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import compose_eval, events, finish, launch_two_processes
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

import rmt  # noqa: F401  (registers the RMT Auto classes)
from rmt.eval.evaluate import run_eval

pytestmark = pytest.mark.multiprocess

COMMON = [
    "debug=fast", "trainer.progress_bar=false", "task=babilong_qa1", "task.min_facts=1",
    "task.max_facts=1",
    "task.curriculum=[{segments:[1],steps:2},{segments:[1,2],steps:2,max_ratio:0.5}]",
    "trainer.max_steps=4", "trainer.eval_every=2", "backbone.dropout=0.1",
]  # fmt: skip
FSDP = ["--use_fsdp", "--fsdp_version", "2"]


def launch(root: Path, name: str, args: list[str], signals: str | None = None, fsdp=True):
    engine = FSDP if fsdp else ["--multi_gpu"]
    env = {"RMT_PROBE_SIGNALS": signals} if signals else {}
    return launch_two_processes(root, name, engine, args, **env)


@pytest.fixture(scope="module")
def fsdp_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fsdp")
    code, out = finish(*launch(root, "full", [*COMMON, f"hydra.run.dir={root / 'full'}"]))
    assert code == 0, out[-4000:]
    return root / "full"


def test_fsdp_run_saves_sharded_last_and_consolidated_best(fsdp_run):
    summary = json.loads((fsdp_run / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["stage"] == 1 and summary["stopped"] == "max_steps"
    last = fsdp_run / "last"
    # FSDP's own sharded format, one file per rank, not a whole-model file
    assert sorted(p.name for p in (last / "pytorch_model_fsdp_0").glob("*.distcp")) == [
        "__0_0.distcp",
        "__1_0.distcp",
    ]
    assert (last / "optimizer_0").is_dir() and not (last / "model.safetensors").exists()
    assert [e["step"] for e in events(fsdp_run, "train")] == [1, 2, 3, 4]


def test_fsdp_best_loads_with_from_pretrained_and_rmt_eval(fsdp_run, tmp_path):
    model, info = AutoModelForCausalLM.from_pretrained(fsdp_run / "best", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    saved = load_file(fsdp_run / "best" / "model.safetensors")
    whole = model.state_dict()
    # every saved tensor has the model's full shape (a rank's shard would be half of dim 0)
    assert {k: tuple(v.shape) for k, v in saved.items()} == {
        k: tuple(whole[k].shape) for k in saved
    }
    cfg = compose_eval([f"checkpoint={fsdp_run}", "lengths=[0k]", "samples=4",
                        "batch_size=4", "progress_bar=false"])  # fmt: skip
    cfg.output_dir = str(tmp_path / "eval")
    rows = run_eval(cfg)
    assert [(r.task, r.length) for r in rows] == [("qa1", "0k")]
    assert (tmp_path / "eval" / "results.csv").is_file()


def curve(run: Path) -> list:
    return [
        (e["step"], e["stage"], e["loss"], e["lr"], e["grad_norm"]) for e in events(run, "train")
    ] + [(e["step"], e["loss"], e["accuracy"]) for e in events(run, "valid")]


@pytest.mark.slow
def test_fsdp_trains_like_ddp(fsdp_run):
    """Same data, same averaged gradients: only float summation order may differ."""
    ddp = fsdp_run.parent / "ddp"
    code, out = finish(*launch(ddp.parent, "ddp", [*COMMON, f"hydra.run.dir={ddp}"], fsdp=False))
    assert code == 0, out[-4000:]
    fsdp_curve, ddp_curve = curve(fsdp_run), curve(ddp)
    assert [c[:2] for c in fsdp_curve] == [c[:2] for c in ddp_curve]  # steps, stages
    numbers = [torch.tensor([x for c in cv for x in c[2:]]) for cv in (fsdp_curve, ddp_curve)]
    assert numbers[0].allclose(numbers[1], rtol=1e-4, atol=1e-6)
    a, b = (
        load_file(fsdp_run / "best" / "model.safetensors"),
        load_file(ddp / "best" / "model.safetensors"),
    )
    assert a.keys() == b.keys()  # tied weights saved once, as save_pretrained does
    assert all(a[k].allclose(b[k], atol=1e-5) for k in a)


@pytest.mark.slow
def test_fsdp_resume_is_exact(fsdp_run):
    root = fsdp_run.parent
    folder = root / "stopped"
    code, out = finish(*launch(root, "stopped", [*COMMON, f"hydra.run.dir={folder}"], "3:TERM"))
    assert code != 0 and "stopped at step 3; resume with" in out, out[-4000:]
    state = json.loads((folder / "last" / "trainer_state.json").read_text())
    assert [state["progress"][k] for k in ("step", "stage")] == [3, 1]
    code, out = finish(*launch(root, "resumed", [f"resume={folder}"]))
    assert code == 0, out[-4000:]
    assert curve(folder) == curve(fsdp_run)  # floats compared exactly
    a, b = (
        load_file(fsdp_run / "best" / "model.safetensors"),
        load_file(folder / "best" / "model.safetensors"),
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

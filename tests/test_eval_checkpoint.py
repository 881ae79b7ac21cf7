"""Broken folders, foreign checkpoints and bad eval configs fail with a message naming the fix."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import compose_eval, make_checkpoint, run_eval_inprocess, snapshot

import rmt
from rmt.eval import checkpoint as ckpt_io
from rmt.run import CheckpointError

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


@pytest.fixture(scope="module")
def good_run(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("good") / "run")


def _copy(run: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(run, dst)
    return dst


def test_run_dir_and_best_dir_resolve_the_same(good_run: Path):
    a = ckpt_io.check(good_run)
    b = ckpt_io.check(good_run / "best")
    assert a.best_dir == b.best_dir == good_run / "best"
    assert a.run_dir == b.run_dir == good_run
    assert a.name == "run" and list(a.run_config.task.tasks) == ["qa1", "qa2"]
    model, tok = ckpt_io.load(a)
    assert model.config.num_mem_tokens == 4 and not model.training
    assert tok.eos_token_id is not None


@pytest.mark.parametrize(
    "breakage, message, fix",
    [
        ("missing", "no such folder", "Pass a training run folder"),
        ("file", "is a file", "pass the run folder or its best/ folder"),
        ("empty", "not an rmt checkpoint", "Pass the run folder that rmt-train printed"),
        ("last_only", "has last/ but no best/", "Resume it (`rmt-train resume=<run dir>`)"),
        ("no_weights", "missing model.safetensors", "Copy the whole best/ folder again"),
        ("no_tokenizer", "missing tokenizer.json or tokenizer_config.json",
         "Copy the whole best/ folder again"),
        ("no_state", "missing trainer_state.json", "Copy the whole best/ folder again"),
        ("no_config_yaml", "missing config.yaml", "Copy the whole best/ folder again"),
        ("bad_json", "config.json is not valid JSON", "Copy the run folder again from where it was written"),
        ("plain_hf", "model_type='llama', not 'rmt'", "RMTForCausalLM.from_backbone"),
        ("bad_state", "trainer_state.json is not valid JSON",
         "Copy the run folder again from where it was written"),
        ("no_version", "has no rmt_version", "Evaluate checkpoints written by rmt-train"),
        ("other_version", "written by rmt 9.3.0, this is rmt", "`pip install rmt==9.3.0`"),
        ("damaged_weights", "cannot load the model", "copy best/ again"),
    ],
)  # fmt: skip
def test_broken_checkpoints(good_run: Path, tmp_path: Path, breakage: str, message: str, fix: str):
    run = _copy(good_run, tmp_path)
    best = run / "best"
    target = run
    if breakage == "missing":
        target = tmp_path / "does-not-exist"
    elif breakage == "file":
        target = best / "config.json"
    elif breakage == "empty":
        target = tmp_path / "empty"
        target.mkdir()
    elif breakage == "last_only":
        shutil.rmtree(best)
        (run / "last").mkdir()
    elif breakage == "no_weights":
        (best / "model.safetensors").unlink()
    elif breakage == "no_tokenizer":
        (best / "tokenizer.json").unlink()
        (best / "tokenizer_config.json").unlink()
    elif breakage == "no_state":
        (best / "trainer_state.json").unlink()
    elif breakage == "no_config_yaml":
        (best / "config.yaml").unlink()
        (run / "config.yaml").unlink()
    elif breakage == "bad_json":
        (best / "config.json").write_text("{oops")
    elif breakage == "plain_hf":
        from rmt.eval.checkpoint import load

        model, _ = load(ckpt_io.check(run))
        shutil.rmtree(best / "model.safetensors", ignore_errors=True)
        (best / "model.safetensors").unlink(missing_ok=True)
        model.backbone.save_pretrained(best)  # overwrites config.json with the bare llama's
    elif breakage == "bad_state":
        (best / "trainer_state.json").write_text("not json")
    elif breakage == "no_version":
        (best / "trainer_state.json").write_text(json.dumps({"step": 3}))
    elif breakage == "other_version":
        (best / "trainer_state.json").write_text(json.dumps({"rmt_version": "9.3.0"}))
    elif breakage == "damaged_weights":
        data = (best / "model.safetensors").read_bytes()
        (best / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=message) as err:
        ck = ckpt_io.check(target)
        ckpt_io.load(ck)
    assert fix in str(err.value)  # every message names its way out


def test_version_mismatch_can_be_waived(good_run: Path, tmp_path: Path):
    run = _copy(good_run, tmp_path)
    major, minor, *_ = rmt.__version__.split(".")
    state = json.loads((run / "best" / "trainer_state.json").read_text())
    state["rmt_version"] = f"{major}.{minor}.99"  # a patch release: same format, accepted
    (run / "best" / "trainer_state.json").write_text(json.dumps(state))
    assert ckpt_io.check(run).trainer_state["rmt_version"].endswith(".99")
    state["rmt_version"] = f"{int(major) + 1}.0.0"
    (run / "best" / "trainer_state.json").write_text(json.dumps(state))
    with pytest.warns(UserWarning, match="strict_version=false"):
        ck = ckpt_io.check(run, strict_version=False)
    assert ck.best_dir == run / "best"


def test_crash_mid_swap_uses_the_complete_old_best(good_run: Path, tmp_path: Path):
    """rmt-train swaps best/ by renames; a crash between them leaves .best.old complete."""
    run = _copy(good_run, tmp_path)
    (run / "best").rename(run / ".best.old")
    ck = ckpt_io.check(run)
    assert ck.best_dir == run / ".best.old" and ck.run_dir == run


def test_eval_config_errors(good_run: Path, tmp_path: Path):
    out = tmp_path / "out"
    cases = [
        ([], "no checkpoint given"),
        ([f"checkpoint={good_run}", "tasks=[qa99]"], "unknown task names"),
        ([f"checkpoint={good_run}", "lengths=[4x]"], "cannot read length"),
        ([f"checkpoint={good_run}", "data.source=web"], "data.source='web'"),
        ([f"checkpoint={good_run}", "data.source=babi"], "needs data.path"),
        ([f"checkpoint={good_run}", "data.source=local"], "renamed: use data.source=babilong"),
        ([f"checkpoint={good_run}", "data.source=hub"], "renamed: use data.source=babilong"),
        ([f"checkpoint={good_run}", "samples=0"], "samples=0"),
        ([f"checkpoint={good_run}", "position=[0.5,0.2]"], "position="),
        ([f"checkpoint={good_run}", "names=[a,b]"], "one name per checkpoint"),
        ([f"checkpoint={good_run}", "background.kind=nope"], "background.kind='nope'"),
        ([f"checkpoint={good_run}", "background.kind=files", "background.path=/nonexistent"], "nonexistent"),
        ([f"checkpoint={good_run}", "device=cuda:3"] if not torch.cuda.is_available() else [], "no CUDA device|no checkpoint"),
    ]  # fmt: skip
    for overrides, message in cases:
        with pytest.raises(ValueError, match=message):
            run_eval_inprocess(["progress_bar=false", *overrides], out)


def test_typos_fail_at_compose_time():
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="sample"):
        compose_eval(["sample=3"])
    with pytest.raises(ConfigCompositionException, match="samples"):
        compose_eval(["samples=many"])
    with pytest.raises(ConfigCompositionException, match="compile"):
        compose_eval(["compile=maybe"])


def test_output_inside_checkpoint_is_refused(good_run: Path):
    before = snapshot(good_run)
    for inside in (good_run / "best" / "eval", good_run / "eval"):
        with pytest.raises(ValueError, match="never writes into a checkpoint"):
            run_eval_inprocess([f"checkpoint={good_run}", "progress_bar=false"], inside)
    assert snapshot(good_run) == before

"""Bad input ends in one line (issue 14, item 3): every case exits with status 2 and prints a
single line on stderr that names the file, key or value and the fix, with no traceback.

Each case runs the real ``rmt-train`` / ``rmt-eval`` Hydra main in this process."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from helpers import FAST, compose_config, main_in_process, qa1_story

from rmt.config.schema import typed, validate
from rmt.errors import ConfigError
from rmt.train import trainer


def one_line(capsys) -> str:
    """The command's stderr, checked to be one error line (no traceback)."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def refused(monkeypatch, capsys, *args: str, cli: str = "rmt-train") -> str:
    assert main_in_process(monkeypatch, *args, cli=cli) == 2
    line = one_line(capsys)
    assert line.startswith(f"{cli}: error: ")
    return line


@pytest.fixture
def cwd(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


# ------------------------------------------------------------------------ local bAbI data
TRAIN = "qa1_single-supporting-fact_train.txt"
BAD_BABI = {
    "empty": (b"", ["it is empty"]),
    "binary": (bytes(range(256)) * 8, ["NUL bytes"]),
    "malformed": (b"1 Mary went to the kitchen.\nfoo bar\n", [":2:", "expected '<number> <text>'"]),
    "bad_id": (b"1 Mary went to the kitchen.\n2 Where is Mary?\tkitchen\t7\n", [":2:", "[7]"]),
    "no_tabs": (b"1 Mary went to the kitchen.\n2 Where is Mary? kitchen 1\n", [":2:", "tab"]),
    # without '?' this was read as a fact: the trailing supporting id gives it away
    "no_tabs_no_mark": (
        b"1 Mary went to the kitchen.\n2 Where is Mary kitchen 1\n",
        [":2:", "tab"],
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_BABI))
def test_bad_babi_file(case, cwd, monkeypatch, capsys):
    data, wanted = BAD_BABI[case]
    (cwd / "babi").mkdir()
    (cwd / "babi" / TRAIN).write_bytes(data)
    line = refused(monkeypatch, capsys, *FAST, "task.source=babi", f"task.path={cwd / 'babi'}")
    assert f"task.path: {cwd / 'babi' / TRAIN}" in line
    for text in wanted:
        assert text in line


def test_babi_folder_without_the_tasks_file(cwd, monkeypatch, capsys):
    (cwd / "babi").mkdir()
    (cwd / "babi" / "qa2_two-supporting-facts_train.txt").write_text(qa1_story(0, 4))
    line = refused(monkeypatch, capsys, *FAST, "task.source=babi", f"task.path={cwd / 'babi'}")
    assert "has no qa1_*_train.txt file" in line and "tasks_1-20_v1-2/en-10k" in line


def test_valid_babi_folder_with_the_default_recipe_names_a_fix_that_works(cwd, monkeypatch, capsys):
    """The default recipe's story bounds and batch size were made for generated stories; on
    real qa1 stories (2 to 12 facts, 40 stories) a stage may keep too few. That is one line
    before training, naming an override, and following the advice (again, if a later check
    then names another) reaches a config whose every stage passes the checks."""
    (cwd / "babi").mkdir()
    (cwd / "babi" / TRAIN).write_text("".join(qa1_story(k, 2 + (k % 6) * 2) for k in range(40)))
    data = ["task.source=babi", f"task.path={cwd / 'babi'}", "trainer.progress_bar=false"]
    line = refused(monkeypatch, capsys, *data)
    assert "task.curriculum" in line
    for attempt in range(5):
        advice = re.search(r"set (\S+=\d+)", line)
        assert advice, line
        data.append(advice.group(1))
        cfg = compose_config(data)
        cfg.output_dir = str(cwd / f"run{attempt}")
        try:
            trainer.Trainer(cfg).setup()  # the preflight and the batch check of every stage
            return
        except ConfigError as err:
            line = str(err)
    pytest.fail(f"the advice did not converge: {data}")


# ------------------------------------------------------------------------- background text
@pytest.mark.parametrize("case", ["empty_folder", "empty_file", "binary_file"])
def test_bad_background_text(case, cwd, monkeypatch, capsys):
    path = cwd / "text"
    path.mkdir()
    if case != "empty_folder":
        path = path / "book.txt"
        path.write_bytes(b"" if case == "empty_file" else b"\x89PNG\r\n\x00\xff" * 100)
    line = refused(monkeypatch, capsys, *FAST, "task.background.kind=files",
                   f"task.background.path={path}")  # fmt: skip
    assert line.startswith("rmt-train: error: task.background: ") and str(path) in line
    assert "builtin" in line  # the fix: other text, or the builtin background


# -------------------------------------------------------------------------------- resume
@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A 2-step run that ran to its end (best/ and last/ written)."""
    run = tmp_path_factory.mktemp("finished") / "run"
    cfg = compose_config([*FAST, "trainer.max_steps=2"])
    cfg.output_dir = str(run)
    trainer.train(cfg)
    return run


def _damaged_copy(finished: Path, tmp_path: Path, file: str, data: bytes | None = None) -> Path:
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    target = run / file
    target.write_bytes(target.read_bytes()[: target.stat().st_size // 2] if data is None else data)
    return run


@pytest.mark.parametrize(
    ("file", "data"),
    [("last/model.safetensors", None), ("last/optimizer.bin", None),
     ("config.yaml", b"a: [1, 2\nb: {")],
)  # fmt: skip
def test_resume_with_a_damaged_file(file, data, finished, cwd, monkeypatch, capsys):
    run = _damaged_copy(finished, cwd, file, data)
    line = refused(monkeypatch, capsys, f"resume={run}", "trainer.max_steps=4")
    assert str(run / file) in line and "damaged" in line
    assert not list(run.glob(".hydra/resume-*"))  # the refused resume left no files


# --------------------------------------------------------------------- rmt-eval local data
@pytest.mark.parametrize(
    ("name", "data", "wanted"),
    [("empty.jsonl", b"", "is empty"),
     ("binary.jsonl", b"\x00\xff\xfe" * 300, "not UTF-8 text"),
     ("bad.jsonl", b'{"input": "a", "question": "q", "target": "t"}\n{"input": "a\n', ":2: not valid JSON")],
)  # fmt: skip
def test_rmt_eval_bad_local_rows(name, data, wanted, finished, cwd, monkeypatch, capsys):
    (cwd / name).write_bytes(data)
    line = refused(monkeypatch, capsys, f"checkpoint={finished}", "data.source=babilong",
                   f"data.path={cwd / name}", "lengths=[0k]", "samples=1", "progress_bar=false",
                   cli="rmt-eval")  # fmt: skip
    assert f"{cwd / name}" in line and wanted in line and "'input', 'question', 'target'" in line


@pytest.mark.parametrize(
    ("data", "wanted"),
    [(b"[1, 2]\n", "holds a JSON list"), (b"\x00\xff\xfe\x89", "is not UTF-8 text")],
)
def test_rmt_eval_damaged_best_config_json(data, wanted, finished, cwd, monkeypatch, capsys):
    run = _damaged_copy(finished, cwd, "best/config.json", data)
    line = refused(monkeypatch, capsys, f"checkpoint={run}", "lengths=[0k]", cli="rmt-eval")
    assert f"{run / 'best' / 'config.json'} {wanted}" in line and "Copy the run folder" in line


def test_refused_rmt_eval_leaves_no_folder_behind(finished, cwd, monkeypatch, capsys):
    run = cwd / "run"
    shutil.copytree(finished, run)
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    line = refused(monkeypatch, capsys, f"checkpoint={run}", f"hydra.run.dir={run / 'eval'}",
                   cli="rmt-eval")  # fmt: skip
    assert "never writes into a checkpoint" in line
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before  # no eval/eval.log


# -------------------------------------------------------------------------- config advice
def test_too_many_memory_tokens_get_advice_that_works(cwd, monkeypatch, capsys):
    line = refused(monkeypatch, capsys, *FAST, "memory.num_tokens=40")
    assert "lower segment.size" not in line  # no segment size fits beside 80 memory positions
    assert "raise backbone.max_positions to 104" in line
    validate(typed(compose_config([*FAST, "memory.num_tokens=40", "backbone.max_positions=104"])))

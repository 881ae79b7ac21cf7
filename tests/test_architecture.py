"""The layering rules hold for rmt/, and the checker catches each kind of violation."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import check_architecture as arch  # noqa: E402


def test_rmt_follows_the_layering():
    assert arch.check() == []


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "rmt"
    for name, text in {"__init__.py": "", **files}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if not (path.parent / "__init__.py").exists():
            (path.parent / "__init__.py").write_text("")
        path.write_text(text)
    return root


def test_checker_catches_each_violation(tmp_path: Path):
    long_body = "\n".join(f"    x{i} = {i}" for i in range(101))
    root = _package(tmp_path, {
        "tasks/base.py": "from rmt.train.trainer import Trainer\n",  # upward
        "train/trainer.py": "from rmt.train.loop import run\nTrainer = 1\n",
        "train/loop.py": "from rmt.train.trainer import Trainer\nrun = 1\n",  # cycle
        "eval/grid.py": "def f():\n    import json\n    return json\n",  # lazy, no reason
        "eval/ok.py": "def f():\n    import json  # lazy: measured 3 s\n    return json\n",
        "run.py": f"def g():\n{long_body}\n",  # 102 lines
    })  # fmt: skip
    problems = "\n".join(arch.check(root))
    assert "tasks imports rmt.train.trainer" in problems
    assert "import cycle: rmt.train.trainer -> rmt.train.loop -> rmt.train.trainer" in problems
    assert "rmt/eval/grid.py:2: import inside a function (json)" in problems
    assert "eval/ok.py" not in problems
    assert "function g has 102 lines" in problems
    assert len(problems.splitlines()) == 4


def test_layers_of_modules():
    assert arch.layer_of("rmt") == "modeling"
    assert arch.layer_of("rmt.tasks.babilong.task") == "tasks"
    assert arch.layer_of("rmt.run") == "run"
    assert arch.layer_of("torch.nn") is None

"""Fixtures shared by all tests; plain helper functions live in ``helpers.py``.

``pytest --reverse`` runs the collected tests in reverse order, to catch tests that only pass
after (or before) another one.
"""

from __future__ import annotations

import pytest
from helpers import FAST, compose_config, logging_restored


def pytest_addoption(parser):
    parser.addoption(
        "--reverse", action="store_true", help="run the tests in reverse order (order checks)"
    )


def pytest_collection_modifyitems(config, items):
    if config.getoption("--reverse"):
        items.reverse()


@pytest.fixture
def fast_cfg(tmp_path):
    """Factory: a composed fast training config writing into ``tmp_path/<name>``."""

    def make(*overrides: str, run: str = "run"):
        cfg = compose_config([*FAST, *overrides])
        cfg.output_dir = str(tmp_path / run)
        return cfg

    return make


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    """Accelerate keeps process-wide singletons; reset them so each test's Accelerator settings
    (e.g. bf16 in one test, fp32 in the next) apply instead of the first test's."""
    yield
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


@pytest.fixture(autouse=True)
def _restore_logging():
    """Every test leaves the logging setup as it found it (see ``helpers.logging_restored``)."""
    with logging_restored():
        yield


@pytest.fixture
def one_thread():
    """Tiny models run fastest on one thread, and the test machine's cores are shared."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_rmt():
    """Factory: a seeded tiny random `RMTForCausalLM` (hidden 32, 2 layers) in eval mode.

    `tiny_rmt("gpt2", mem=3, seg=6, bptt_depth=2)`: the keyword arguments after `positions` and
    `vocab` go to `RMTConfig`. Every call with the same arguments returns the same weights.
    """
    import torch

    from rmt import RMTConfig, RMTForCausalLM
    from rmt.modeling.backbones import tiny_backbone_config

    def make(family="llama", *, mem=4, seg=8, positions=64, vocab=97, **rmt_kwargs):
        torch.manual_seed(0)
        bb = tiny_backbone_config(
            family, vocab_size=vocab, hidden_size=32, num_layers=2, num_heads=4,
            max_positions=positions,
        )  # fmt: skip
        config = RMTConfig(backbone_config=bb, num_mem_tokens=mem, segment_size=seg, **rmt_kwargs)
        return RMTForCausalLM(config).eval()

    return make

"""Mutation check for the model: put known bugs into a copy of the code and see which tests fail.

Each mutation is one deliberate bug of a class that has bitten RMT code before (positions, masks,
memory passing, label shift across segment boundaries, truncated BPTT, checkpointing, generation).
For each one the script copies `rmt/`, `tests/` and `pyproject.toml` into a temporary folder, applies
the bug there, runs the model tests on that copy, and records the tests that fail. A mutation no test
catches is a hole in the safety net; a mutation whose text is no longer in the source (after a
refactor) is reported as stale so it gets rewritten rather than silently skipped.

The checkout is never modified. The results table in tests/README.md comes from this script:

    python scripts/mutation_check.py                 # all mutations, the model test files
    python scripts/mutation_check.py --only bptt-off-by-one read-memory-skips-segment
    python scripts/mutation_check.py --tests tests/test_modeling.py tests/test_eval_core.py

Exits 1 when a mutation survives or is stale.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORE = "rmt/modeling/core.py"
HEAD = "rmt/modeling/causal_lm.py"
BASE = "rmt/modeling/memory/base.py"
TOKENS = "rmt/modeling/memory/tokens.py"
SEGMENTATION = "rmt/modeling/segmentation.py"
PADDING = "rmt/modeling/padding.py"
SEQ_CLS = "rmt/modeling/seq_cls.py"
DEFAULT_TESTS = (
    "tests/test_modeling.py",
    "tests/test_modeling_padding.py",
    "tests/test_modeling_generation.py",
    "tests/test_modeling_core.py",
    "tests/test_modeling_legacy.py",
    "tests/test_seq_cls.py",
)


@dataclass(frozen=True)
class Mutation:
    name: str
    bug: str  # what goes wrong, in words
    path: str  # file, relative to the repository root
    old: str  # must occur exactly once in the file
    new: str
    audit: bool = False  # listed by the audit in issue 20 (the others were added with it)


MUTATIONS = [
    # ---------------------------------------------------------------- the audit's list
    Mutation(
        "bptt-off-by-one", "truncated BPTT keeps one memory transition too few", CORE,
        "if depth != -1 and step < n_steps - depth:",
        "if depth != -1 and step <= n_steps - depth:", audit=True,
    ),
    Mutation(
        "checkpoint-detaches-memory", "checkpointed segments read detached memory", CORE,
        "run_segment, state_in, seg_ids, seg_mask, h_rows, h_cols, use_reentrant=False",
        "run_segment, self.memory.detach(state_in), seg_ids, seg_mask, h_rows, h_cols,\n"
        "                    use_reentrant=False",
        audit=True,
    ),
    Mutation(
        "positions-ignore-padding", "position ids count pads (write memory shifted in a partial segment)",
        BASE,
        "return (mask.long().cumsum(-1) - 1).clamp(min=0)",
        "return torch.arange(mask.shape[1], device=mask.device).expand_as(mask)", audit=True,
    ),
    Mutation(
        "write-memory-sees-pads", "the backbone gets no padding mask: write memory attends to pads",
        CORE,
        "inputs_embeds=inputs.inputs_embeds, attention_mask=inputs.attention_mask,",
        "inputs_embeds=inputs.inputs_embeds, attention_mask=torch.ones_like(inputs.attention_mask),",
        audit=True,
    ),
    Mutation(
        "read-memory-skips-segment", "read_memory (generation) skips the first segment", CORE,
        "for step, active in enumerate(plan.schedule[:stop]):",
        "for step, active in enumerate(plan.schedule[1:stop] if stop else plan.schedule):",
        audit=True,
    ),
    # ---------------------------------------------------------------- positions
    Mutation(
        "positions-start-at-one", "positions start at 1 instead of 0 in every segment", BASE,
        "return (mask.long().cumsum(-1) - 1).clamp(min=0)",
        "return mask.long().cumsum(-1)",
    ),
    Mutation(
        "hidden-states-off-by-offset", "the head reads hidden states at the read-memory positions",
        CORE,
        "outputs.last_hidden_state[rows, cols + inputs.offset]",
        "outputs.last_hidden_state[rows, cols]",
    ),
    # ---------------------------------------------------------------- masks
    Mutation(
        "unpad-ignores-mask", "the batch is not unpadded: pads are read as tokens", CORE,
        "order = torch.sort((~valid).to(torch.uint8), dim=1, stable=True).indices",
        "order = torch.arange(width, device=valid.device).expand(bsz, width)",
    ),
    Mutation(
        "labels-ignore-padding", "labels are taken from the first columns, not the sample's", HEAD,
        "packed = plan.pack(labels, -100)",
        "packed = labels[:, : plan.packed.shape[1]].masked_fill(~plan.valid(), -100)",
    ),
    Mutation(
        "generation-right-padded", "the generation prompt [memory ; last segment] is right-padded",
        PADDING, "return out, real.long()", "return values, mask.long()",
    ),
    # ---------------------------------------------------------------- label shift across segments
    Mutation(
        "labels-not-shifted-across-segments",
        "a segment's last token loses its target (the first token of the next segment)", HEAD,
        "self.tgt, _ = gather_segments(self.targets, active, -100)",
        "self.tgt = F.pad(gather_segments(self.targets, active, -100)[0][:, :-1], (0, 1), value=-100)",
    ),
    Mutation(
        "labels-not-shifted", "labels are not shifted: each position predicts itself", HEAD,
        "shifted = torch.cat([packed[:, 1:], packed.new_full((packed.shape[0], 1), -100)], dim=1)",
        "shifted = packed",
    ),
    # ---------------------------------------------------------------- memory passing
    Mutation(
        "memory-crosses-samples", "a step's new memory is stored in another sample's row (merge)",
        BASE,
        "return full.to(dtype).index_copy(0, rows, new.to(dtype))",
        "return full.to(dtype).index_copy(0, rows.flip(0), new.to(dtype))",
    ),
    Mutation(
        "select-crosses-samples", "a step reads another sample's memory (select)", BASE,
        "return map_state(lambda t: t.index_select(0, rows), state)",
        "return map_state(lambda t: t.index_select(0, rows.flip(0)), state)",
    ),
    Mutation(
        "merge-cuts-gradient", "merging a partial step's memory cuts its gradient", BASE,
        "return full.to(dtype).index_copy(0, rows, new.to(dtype))",
        "return full.to(dtype).index_copy(0, rows, new.to(dtype).detach())",
    ),
    Mutation(
        "write-memory-wrong-slice", "the new memory is read at the read-memory positions", TOKENS,
        "start = hidden.shape[1] - self.num_tokens if self.write_block else 0",
        "start = 0",
    ),
    # ---------------------------------------------------------------- encoders
    Mutation(
        "encoder-memory-wrong-slice", "an encoder's new memory is read at the segment's first tokens",
        TOKENS, "start = hidden.shape[1] - self.num_tokens if self.write_block else 0",
        "start = hidden.shape[1] - self.num_tokens if self.write_block else self.num_tokens",
    ),
    Mutation(
        "roberta-positions-from-zero", "RoBERTa's position ids start at 0, not after the padding index",
        CORE, "position_ids=inputs.position_ids + self._position_offset",
        "position_ids=inputs.position_ids",
    ),
    Mutation(
        "first-token-of-first-segment", "the classifier reads the first segment's first token",
        SEQ_CLS, "if e == self.lengths[b]]", "if _ == 0]",  # `_`: the segment start
    ),
    Mutation(
        "schedule-aligns-first-segments", "a batch is aligned on its first segments, not its last",
        SEGMENTATION, "offset = steps - len(bounds)", "offset = 0",
    ),
    # ---------------------------------------------------------------- generation
    Mutation(
        "generation-memory-stale", "generation reads the memory one segment stale", CORE,
        "return self._run(plan, stop=-1)", "return self._run(plan, stop=-2)",
    ),
    Mutation(
        "generation-memory-crosses-samples", "the generation prompt reads another sample's memory",
        TOKENS,
        "prompt = torch.cat([state.to(embeds.dtype), embeds], dim=1)",
        "prompt = torch.cat([state.flip(0).to(embeds.dtype), embeds], dim=1)",
    ),
    Mutation(
        "generation-without-memory", "the last prompt segment is generated from without memory",
        TOKENS,
        "prompt = torch.cat([state.to(embeds.dtype), embeds], dim=1)",
        "prompt = torch.cat([torch.zeros_like(state).to(embeds.dtype), embeds], dim=1)",
    ),
    # ---------------------------------------------------------------- BPTT and checkpointing
    Mutation(
        "bptt-keeps-one-transition", "any bptt_depth keeps only the last memory transition", CORE,
        "if depth != -1 and step < n_steps - depth:", "if depth != -1 and step < n_steps - 1:",
    ),
    Mutation(
        "last-segment-detached-when-checkpointing",
        "with checkpointing on, the last (not checkpointed) segment reads detached memory", CORE,
        "new_state, hidden = run_segment(state_in, seg_ids, seg_mask, h_rows, h_cols)",
        "new_state, hidden = run_segment(\n"
        "                    self.memory.detach(state_in) if recompute.segments else state_in,\n"
        "                    seg_ids, seg_mask, h_rows, h_cols,\n"
        "                )",
    ),
    # ---------------------------------------------------------------- checkpoints
    Mutation(
        "legacy-memory-not-mapped", "rmt 0.1.0 checkpoints load without their memory tokens", CORE,
        'LEGACY_KEY_MAPPING = {"^memory$": "memory.tokens"}', "LEGACY_KEY_MAPPING = {}",
    ),
]  # fmt: skip


def where(text: str, old: str, path: str) -> str:
    return f"{path}:{text[: text.index(old)].count(chr(10)) + 1}"


def run_tests(copy: Path, tests: list[str]) -> tuple[int, dict[str, str], str]:
    """Run pytest on the copy; return (exit code, {failing test id: FAILED or ERROR}, output tail)."""
    env = {**os.environ, "PYTHONPATH": str(copy), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfE", *tests]
    proc = subprocess.run(cmd, cwd=copy, env=env, capture_output=True, text=True, timeout=1200)
    out = proc.stdout + proc.stderr
    failed = {m.group(2): m.group(1) for m in re.finditer(r"^(FAILED|ERROR) (\S+)", out, re.M)}
    return proc.returncode, failed, out[-2000:]


def summarize(failed: dict[str, str]) -> str:
    """`file::test (n)` per test function, n = number of failing parametrizations; `setup error`
    when a fixture failed (e.g. `recall_model` did not learn under the bug)."""
    counts: Counter = Counter()
    for test, kind in sorted(failed.items()):
        name = re.sub(r"\[.*\]$", "", test).removeprefix("tests/")
        counts[(name, kind)] += 1
    parts = []
    for (name, kind), n in counts.items():
        notes = ([str(n)] if n > 1 else []) + (["setup error"] if kind == "ERROR" else [])
        parts.append(f"`{name}`" + (f" ({', '.join(notes)})" if notes else ""))
    return ", ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run these mutations only")
    parser.add_argument("--tests", nargs="+", default=list(DEFAULT_TESTS), help="test files to run")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTATIONS if not args.only or m.name in args.only]
    unknown = set(args.only or ()) - {m.name for m in MUTATIONS}
    if unknown:
        parser.error(f"unknown mutation(s) {sorted(unknown)}; known: {[m.name for m in MUTATIONS]}")

    with tempfile.TemporaryDirectory(prefix="rmt-mutation-") as tmp:
        copy = Path(tmp)
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        for part in ("rmt", "tests"):
            shutil.copytree(ROOT / part, copy / part, ignore=ignore)
        shutil.copy2(ROOT / "pyproject.toml", copy / "pyproject.toml")
        probe = subprocess.run(
            [sys.executable, "-c", "import rmt; print(rmt.__file__)"], cwd=copy,
            env={**os.environ, "PYTHONPATH": str(copy)}, capture_output=True, text=True,
        )  # fmt: skip
        if not probe.stdout.strip().startswith(str(copy)):
            print(f"the copy does not import its own rmt: {probe.stdout}{probe.stderr}")
            return 1
        start = time.time()
        code, failed, tail = run_tests(copy, args.tests)
        print(f"baseline (no mutation): exit {code}, {time.time() - start:.0f} s", flush=True)
        if code != 0:
            print(f"the unmutated tests fail; fix them first:\n{tail}")
            return 1

        rows, holes = [], 0
        for m in chosen:
            target = copy / m.path
            original = target.read_text()
            if original.count(m.old) != 1:
                rows.append(
                    (m, f"{m.path}:?", f"STALE: the text occurs {original.count(m.old)} times")
                )
                holes += 1
                continue
            target.write_text(original.replace(m.old, m.new))
            try:
                start = time.time()
                code, failed, tail = run_tests(copy, args.tests)
            finally:
                target.write_text(original)
            caught = summarize(failed) if failed else f"NOT CAUGHT (pytest exit {code})"
            if not failed:
                holes += 1
                if code != 0:
                    print(tail)
            print(f"{m.name}: {len(failed)} failing, {time.time() - start:.0f} s", flush=True)
            rows.append((m, where(original, m.old, m.path), caught))

    print("\n| bug | where | tests that fail (number of failing cases) |\n|---|---|---|")
    for m, loc, caught in rows:
        tag = " (audit)" if m.audit else ""
        print(f"| `{m.name}`{tag}: {m.bug} | `{loc}` | {caught} |")
    print(f"\n{len(rows) - holes} of {len(rows)} mutations caught")
    return 1 if holes else 0


if __name__ == "__main__":
    sys.exit(main())

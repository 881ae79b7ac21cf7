"""What to recompute in backward, and when: by memory, not by segment count.

Full BPTT keeps every segment's activations until backward. `segment_checkpointing` trades
recomputation for memory in one of four schemes (`Recompute`):

- "none": keep everything (the fastest step);
- "partial": recompute the earliest segments, as few as needed for the activations of the
  segments after them to fit the budget (the last segment is never recomputed: its backward runs
  right after its forward, so keeping it costs no more peak than recomputing it);
- "mlp": recompute only the MLP of every decoder layer (`MLPRecompute`), in every segment: the
  MLP-wide tensors (up, gate, activation) are dropped, the rest kept;
- "full": recompute every segment but the last (memory bounded at about one segment).

`auto` (`choose`) keeps everything when the whole chain's activations fit `checkpointing_budget`
times the free memory (CUDA: free on the card plus what torch's allocator holds unused; CPU: the
kernel's MemAvailable). Otherwise it takes, of the schemes whose estimate fits, the one with the
smallest estimated extra step time: "partial" costs `SEGMENT_RECOMPUTE_COST` times the share of
tokens it recomputes, "mlp" a fixed `MLP_RECOMPUTE_COST`; if none fits, "full".

Why this order, from measurements (`scripts/bench_train.py --schemes`, docs/performance.md,
"Recomputation schemes"; CPU process time, one thread): on a GPT-2-sized model (4 of GPT-2
small's layers, segment 128, 8 segments) recomputing every segment but the last added 29% to the
plain step, the first half of the segments 14%, the MLPs alone 13% (at 32 segments +20% / +2% /
+1%); all 12 layers at 8 segments +35% / +25% / +26%; the tiny llama preset +48% / +24% / +21%
at 8 segments and +72% / +30% / +23% at 32. So the MLPs cost about as much as recomputing 5-65%
of the segments (median 38%; the constants below, 0.13 against 0.33 per share, make it 39%) while
dropping more than half of the activations (55% estimated; 56-71% measured: the estimate is on the
safe side), and:
- a little over budget: "partial" (a few segments recomputed is cheaper than every MLP);
- when more than ~40% of the segments would have to be recomputed and the MLP scheme fits: "mlp";
- when even that does not fit: "partial" with more segments, up to "full".
On a GPU the costs are not measured yet (`scripts/gpu_speed.sh`, row 1b); only the ratio of the
two constants matters to the choice.

The estimate is analytic (no probe pass, no host sync): per token and layer, the tensors a
decoder layer saves for backward with a fused attention kernel (no L x L matrix): about 10 hidden-
sized vectors (norm inputs, Q, K, V, attention output, projections, residuals) and 3 intermediate-
sized ones (MLP up, gate, activation), which the "mlp" scheme drops. It is an approximation of the
right order, not a bound; the budget's default (half the free memory) leaves room for its error.
"""

from __future__ import annotations

import os
import types
from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint

HIDDEN_VECTORS_PER_LAYER = 10  # saved hidden-sized tensors per token and layer (see above)
INTERMEDIATE_VECTORS_PER_LAYER = 3  # saved MLP-sized tensors per token and layer
# Extra step time of recomputation, as a fraction of the plain step (measured on the CPU, see the
# module docstring): per share of the tokens whose segments are recomputed, and for every MLP.
SEGMENT_RECOMPUTE_COST = 0.33
MLP_RECOMPUTE_COST = 0.13

SETTINGS = (True, False, "auto", "partial", "mlp")  # values of `segment_checkpointing`


@dataclass(frozen=True)
class Recompute:
    """What one forward recomputes in backward: the first `segments` steps of the schedule, or
    (scheme "mlp") the MLPs of every layer. `scheme` names the choice (reported by benchmarks)."""

    scheme: str = "none"
    segments: int = 0  # steps recomputed, counted from the first

    @property
    def mlp(self) -> bool:
        """Whether the MLPs are recomputed (the "mlp" scheme)."""
        return self.scheme == "mlp"


def mlp_width(backbone_config) -> int:
    """The MLP's inner width (`intermediate_size`, GPT-2's `n_inner`, or 4 x hidden)."""
    return (
        getattr(backbone_config, "intermediate_size", None)
        or getattr(backbone_config, "n_inner", None)
        or 4 * backbone_config.hidden_size
    )


def bytes_per_token(backbone_config, element_size: int, *, mlp: bool = True) -> int:
    """Activation bytes one token of one segment keeps for backward, over all layers; `mlp=False`:
    without the MLP-wide tensors (what the "mlp" scheme keeps)."""
    per_layer = HIDDEN_VECTORS_PER_LAYER * backbone_config.hidden_size
    if mlp:
        per_layer += INTERMEDIATE_VECTORS_PER_LAYER * mlp_width(backbone_config)
    return backbone_config.num_hidden_layers * per_layer * element_size


def activation_dtype(device: torch.device, param_dtype: torch.dtype) -> torch.dtype:
    """The dtype activations are kept in: autocast's when it is on, else the weights'."""
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return param_dtype


def free_memory(device: torch.device) -> int:
    """Bytes a forward pass could still use on `device` (CUDA: card + allocator cache; CPU: RAM)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return _available_ram()


def _available_ram() -> int:
    """MemAvailable from /proc/meminfo (Linux); elsewhere the free physical pages."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def estimate(scheme: Recompute, step_bytes: list[int], mlp_share: float) -> int:
    """Bytes of activations a forward keeps for backward under `scheme`; `step_bytes`: each
    step's activations without recomputation, `mlp_share`: the part of them the "mlp" scheme drops.
    A recomputed step keeps only its inputs (the memory state), counted as nothing."""
    if scheme.mlp:
        return round(sum(step_bytes) * (1 - mlp_share))
    return sum(step_bytes[scheme.segments :])


def fewest_segments(step_bytes: list[int], allowed: float) -> int:
    """How many steps, from the first, must be recomputed for the rest to fit `allowed` bytes;
    at most all but the last (which may still not fit)."""
    kept = 0
    for i in range(len(step_bytes) - 1, 0, -1):
        kept += step_bytes[i]
        if kept > allowed:
            return min(i + 1, len(step_bytes) - 1)
    return 0 if len(step_bytes) < 2 or sum(step_bytes) <= allowed else 1


def partial(step_bytes: list[int], allowed: float) -> Recompute:
    """The "partial" scheme for `allowed` bytes, named "none" when nothing needs recomputing and
    "full" when all but the last segment do."""
    r = fewest_segments(step_bytes, allowed)
    return Recompute("none" if r == 0 else "full" if r == len(step_bytes) - 1 else "partial", r)


def cost(scheme: Recompute, step_bytes: list[int]) -> float:
    """Estimated extra step time of `scheme`, as a fraction of the plain step (module docstring)."""
    if scheme.mlp:
        return MLP_RECOMPUTE_COST
    return SEGMENT_RECOMPUTE_COST * sum(step_bytes[: scheme.segments]) / sum(step_bytes)


def choose(step_bytes: list[int], allowed: float, *, mlp_share: float | None) -> Recompute:
    """`auto`: the cheapest scheme whose estimate fits `allowed` bytes, "full" when none does (see
    the module docstring); `step_bytes`: each step's activations without recomputation;
    `mlp_share=None` when the backbone's MLPs cannot be recomputed on their own."""
    n = len(step_bytes)
    if n < 2 or sum(step_bytes) <= allowed:
        return Recompute()
    candidates = [partial(step_bytes, allowed)]
    if mlp_share is not None:
        candidates.append(Recompute("mlp"))
    fitting = [c for c in candidates if estimate(c, step_bytes, mlp_share or 0.0) <= allowed]
    if not fitting:
        return Recompute("full", n - 1)
    return min(fitting, key=lambda c: cost(c, step_bytes))  # a tie keeps "partial"


class MLPRecompute:
    """Activation checkpointing of each decoder layer's MLP, switched on per forward (`active`).

    The MLP modules (found by the family's adapter, `adapters.decoder_mlps`) keep their class and
    their weights' names; only their `forward` is replaced, once, by `_mlp_forward` bound to the
    module (so that `copy.deepcopy` of a model rebinds it to the copy), which runs the class's
    forward under `torch.utils.checkpoint` while `active` is set and gradients are on. This is what
    transformers' own gradient checkpointing does for whole layers (`GradientCheckpointingLayer.
    __call__` runs the layer through a checkpoint function when it is enabled), at a finer grain
    and without editing the model's classes; hooks on the layers (ARMT's reads and writes) run as
    before, outside the checkpointed MLP.
    """

    def __init__(self, mlps) -> None:
        self.active = False
        for mlp in mlps:
            mlp._rmt_recompute = self
            mlp.forward = types.MethodType(_mlp_forward, mlp)


def _mlp_forward(module, *args, **kwargs):
    """An MLP's forward, checkpointed while its `MLPRecompute` is active (see there)."""
    forward = type(module).forward.__get__(module)
    if module._rmt_recompute.active and torch.is_grad_enabled():
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)
    return forward(*args, **kwargs)

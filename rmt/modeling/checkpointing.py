"""When to recompute segments in backward: by memory, not by segment count.

Full BPTT keeps every segment's activations until backward. Recomputing them (segment
checkpointing) bounds memory at one segment but costs 1.2-1.9x the step time, so `auto` uses it
only when the activations of the whole chain would not fit a budget: `checkpointing_budget` times
the memory free on the device (CUDA: free on the card plus what torch's allocator holds unused;
CPU: the kernel's MemAvailable). On a large card short chains keep their activations; on a small
one, or for long inputs, the chain is recomputed.

The estimate is analytic (no probe pass, no host sync): per token and layer, the tensors a
decoder layer saves for backward with a fused attention kernel (no L x L matrix): about 10 hidden-
sized vectors (norm inputs, Q, K, V, attention output, projections, residuals) and 3 intermediate-
sized ones (MLP up, gate, activation). It is an approximation of the right order, not a bound; the
budget's default (half the free memory) leaves room for its error.
"""

from __future__ import annotations

import os

import torch

HIDDEN_VECTORS_PER_LAYER = 10  # saved hidden-sized tensors per token and layer (see above)
INTERMEDIATE_VECTORS_PER_LAYER = 3  # saved MLP-sized tensors per token and layer


def bytes_per_token(backbone_config, element_size: int) -> int:
    """Activation bytes one token of one segment keeps for backward, over all layers."""
    hidden = backbone_config.hidden_size
    intermediate = (
        getattr(backbone_config, "intermediate_size", None)
        or getattr(backbone_config, "n_inner", None)
        or 4 * hidden
    )
    per_layer = HIDDEN_VECTORS_PER_LAYER * hidden + INTERMEDIATE_VECTORS_PER_LAYER * intermediate
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


def chain_fits(estimate: int, budget: float, device: torch.device) -> bool:
    """Whether `estimate` bytes of activations fit `budget` (a fraction) of the free memory."""
    return estimate <= budget * free_memory(device)

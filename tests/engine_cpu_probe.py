"""``rmt-train`` on CPU processes with Accelerate's FSDP2 or DeepSpeed code path (not a test module).

    accelerate launch --use_fsdp --fsdp_version 2 ... tests/engine_cpu_probe.py <rmt-train args>
    accelerate launch --use_deepspeed --zero_stage 2 ... tests/engine_cpu_probe.py <rmt-train args>

Accelerate 1.16 turns ``--use_fsdp``/``--use_deepspeed`` into FSDP or DeepSpeed only for
accelerator processes (GPU, XPU, ...); CPU processes stay plain gloo data parallel. torch's FSDP2
(``fully_shard``) and DeepSpeed's ZeRO (with its CPU accelerator) run on CPU with gloo, so this
probe switches the Accelerate state of a CPU run to the engine right after the Accelerator is
built, with the plugin ``accelerate launch`` configured. Everything after that (``prepare``,
sharded ``save_state``/``load_state``, ``get_state_dict``) is Accelerate's, torch's and
DeepSpeed's own code, so the tests exercise what rmt does under these engines; only the device
differs from a GPU run. Test-only: nothing in the package carries this switch.
``RMT_PROBE_SIGNALS`` works as in tests/train_probe.py.
"""

from __future__ import annotations

import os


def _engine_plugin():
    from accelerate.utils import DeepSpeedPlugin, DistributedType, FullyShardedDataParallelPlugin

    if os.environ.get("ACCELERATE_USE_FSDP") == "true":
        return DistributedType.FSDP, FullyShardedDataParallelPlugin()  # from FSDP_* env
    assert os.environ.get("ACCELERATE_USE_DEEPSPEED") == "true", "launch with an engine flag"
    import deepspeed

    deepspeed.init_distributed(dist_backend="gloo", auto_mpi_discovery=False)  # joins gloo's
    plugin = DeepSpeedPlugin()  # from the launcher's ACCELERATE_DEEPSPEED_* env
    plugin.set_mixed_precision("no")
    plugin.select(_from_accelerator_state=True)
    return DistributedType.DEEPSPEED, plugin


def install() -> None:
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType

    build = Accelerator.__init__

    def init(self, *args, **kwargs):
        build(self, *args, **kwargs)
        state = AcceleratorState()
        if state.distributed_type == DistributedType.MULTI_CPU:
            kind, plugin = _engine_plugin()
            if kind == DistributedType.FSDP:
                state.fsdp_plugin = plugin
            else:
                state.deepspeed_plugins = plugin
            state.distributed_type = kind
            PartialState._shared_state["distributed_type"] = kind

    Accelerator.__init__ = init


if __name__ == "__main__":
    import train_probe  # RMT_PROBE_SIGNALS: stop the run with a real signal at a chosen step

    install()
    train_probe.install()
    from rmt.cli.train import main

    main()

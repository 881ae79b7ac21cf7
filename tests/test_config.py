"""Every packaged YAML composes against its schema; bad keys and values fail naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import CONF_DIR, compose_config
from omegaconf import OmegaConf

from rmt.config.schema import ConfigError, validate
from rmt.tasks.babilong import preflight
from rmt.tasks.babilong.generators import TASKS as GENERATED
from rmt.tasks.babilong.tokenizer import build_tokenizer
from rmt.train import build

GROUPS = ["backbone", "memory", "segment", "bptt", "task", "optim", "trainer"]
# options that only make sense with another choice (512-token segments need a bigger model)
CONTEXT = {
    ("bptt", "truncated"): ["task.curriculum=[{segments:[4]}]"],
}


# encoder backbones and the encoder task: they compose, but a generative task refuses an encoder
# and babilong_cls a decoder (tests below and tests/test_babilong_cls.py)
ENCODERS = {("backbone", "tiny_encoder"), ("backbone", "minilm"), ("task", "babilong_cls")}


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))


def test_every_group_has_options():
    for group in [*GROUPS, "experiment", "debug"]:
        assert _options(group), group
    assert {"tiny", "gpt2", "pythia-160m", "smollm-135m"} <= set(_options("backbone"))
    assert {f"babilong_qa{i}" for i in range(1, 6)} <= set(_options("task"))
    assert {"memory_demo", "babilong_curriculum_gpt2"} <= set(_options("experiment"))


@pytest.mark.parametrize(
    "group,option",
    [(g, o) for g in GROUPS for o in _options(g) if (g, o) not in ENCODERS],
    ids=lambda v: str(v),
)
def test_every_group_option_composes_and_validates(group, option):
    # the default experiment (memory_demo) sets trainer/optim values on top of their groups
    plain = group in ("trainer", "optim")
    picks = [f"{group}={option}", *CONTEXT.get((group, option), [])]
    cfg = compose_config([*picks, *(["~experiment"] if plain else [])])
    raw = OmegaConf.load(Path(CONF_DIR) / group / f"{option}.yaml")
    for key, value in raw.items():  # the option's own values made it into the config
        if key != "defaults" and not OmegaConf.is_config(value):
            assert cfg[group][key] == value, f"{group}.{key}"
    hub = cfg.backbone.pretrained is not None
    validate(cfg, check_backbone=not hub)
    validate(compose_config(picks), check_backbone=not hub)


def test_encoder_backbones_compose_and_generative_tasks_refuse_them():
    cfg = compose_config(["backbone=tiny_encoder"])
    assert cfg.backbone.family == "bert" and cfg.backbone.pretrained is None
    with pytest.raises(ConfigError, match="backbone.family=bert is an encoder; task.type=babilong"):
        validate(cfg)
    try:
        from rmt.modeling.backbones import minilm_path

        path = str(minilm_path())
    except FileNotFoundError:  # the optional `minilm` extra is not installed
        with pytest.raises(Exception, match=r"pip install -e \"\.\[minilm\]\""):
            _ = compose_config(["backbone=minilm"]).backbone.pretrained
        return
    cfg = compose_config(["backbone=minilm"])
    assert cfg.backbone.pretrained == path
    with pytest.raises(ConfigError, match="is an encoder; task.type=babilong"):
        validate(cfg)


@pytest.mark.parametrize("name", _options("experiment"))
def test_every_experiment_composes_and_validates(name):
    cfg = compose_config([f"experiment={name}"])
    assert cfg.name == name
    validate(cfg, check_backbone=cfg.backbone.pretrained is None)


@pytest.mark.parametrize("name", _options("debug"))
def test_every_debug_preset_composes_and_validates(name):
    validate(compose_config([f"debug={name}"]))


def test_eval_root_config_composes():
    import rmt.eval.config as eval_config

    eval_config.register_configs()
    cfg = compose_config(["checkpoint=some/run"], config_name="eval")
    assert cfg.checkpoint == "some/run"


def test_paper_curriculum_experiment():
    cfg = compose_config(["experiment=babilong_curriculum_gpt2"])
    assert cfg.backbone.pretrained == "gpt2" and cfg.memory.num_tokens == 16
    assert cfg.segment.size == 512
    assert [max(s.segments) for s in cfg.task.curriculum] == [1, 2, 4, 8, 16, 32]
    assert cfg.task.background.dataset == "deepmind/pg19"


def test_default_is_the_offline_memory_demo():
    cfg = compose_config()
    assert cfg.backbone.pretrained is None and cfg.backbone.tokenizer is None
    assert cfg.task.tasks == ["qa1"] and cfg.task.source == "generated"
    assert cfg.task.facts_before_last_segment and cfg.task.background.kind == "builtin"
    # in-context warm-up (one segment, facts beside the question), then the task (2 segments)
    assert [list(s.segments) for s in cfg.task.curriculum] == [[1], [1], [2]]
    assert [s.facts_before_last_segment for s in cfg.task.curriculum] == [False, False, None]
    assert [(s.min_facts, s.max_facts) for s in cfg.task.curriculum] == [
        (2, 2),
        (None, None),
        (None, None),
    ]
    assert (cfg.task.min_facts, cfg.task.max_facts) == (2, 4)
    assert list(cfg.task.aux_labels) == ["question_subject", "fact_subject"]
    assert cfg.segment.size == 64 and cfg.memory.num_tokens == 10 and cfg.memory.init_std == 1.0
    assert cfg.backbone.family == "llama" and cfg.backbone.hidden_size == 64
    assert cfg.trainer.aux_lm_loss == 0.0 and cfg.trainer.max_minutes == 15
    validate(cfg)


def test_command_line_picks_win_over_the_default_experiment():
    cfg = compose_config(["task=babilong_qa2", "memory.num_tokens=5"])
    assert cfg.task.tasks == ["qa2"] and cfg.memory.num_tokens == 5
    cfg = compose_config(["task=babilong_qa1", "memory.num_tokens=10"])
    assert cfg.task.name == "babilong_qa1" and cfg.memory.num_tokens == 10


@pytest.mark.parametrize(
    "override,message",
    [
        ("memory.num_token=5", "Key 'num_token' not in 'MemoryConfig'"),  # the README's example
        ("segment.size=big", "Value 'big' of type 'str' could not be converted to Integer"),
        ("trainer.max_steps=1.5", "Value '1.5' of type 'float' could not be converted to Integer"),
        ("task.background.knd=files", "Key 'knd' not in 'BackgroundConfig'"),
        ("task=babilong_qa99", "Could not find 'task/babilong_qa99'"),
        ("backbone=bert", "Could not find 'backbone/bert'"),
        ("bogus=1", "Key 'bogus' not in 'TrainConfig'"),
    ],
)
def test_unknown_keys_and_wrong_types_fail_at_compose_time(override, message):
    from hydra.errors import HydraException

    with pytest.raises(HydraException) as info:
        compose_config([override])
    # what the CLI prints: Hydra's message, then the cause (which names the key or value)
    printed = f"{info.value}\n{info.value.__cause__}"
    assert message in printed, printed


def test_cli_prints_the_readme_error_for_a_misspelt_key(monkeypatch, capsys, tmp_path):
    from helpers import main_in_process

    monkeypatch.chdir(tmp_path)
    assert main_in_process(monkeypatch, "memory.num_token=5") == 1
    assert "Key 'num_token' not in 'MemoryConfig'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # composing failed: no run folder


@pytest.mark.parametrize(
    "overrides,named",
    [
        (["+bogus=1"], "bogus"),
        (["backbone.family=bert"], "backbone.family"),
        (["segment.alignment=middle"], "segment.alignment"),
        (["segment.checkpointing=sometimes"], "use auto, true, false, partial or mlp"),
        (["segment.checkpointing=mlp", "backbone=tiny_encoder"], "segment.checkpointing=mlp needs"),
        (["segment.checkpointing_budget=0"], "segment.checkpointing_budget"),
        (["segment.checkpointing_budget=1.5"], "segment.checkpointing_budget"),
        (["segment.size=250", "backbone.max_positions=256"], "segment.size"),
        (["bptt.depth=3"], "bptt.depth"),
        (["bptt.depth=0"], "bptt.depth"),
        (["task.tasks=[qa1,qa42]"], "task.tasks"),
        (["task.tasks=[qa21]"], "task.tasks"),
        (["task.background.kind=files", "task.background.path=/no/such.txt"], "background.path"),
        (["task.background.kind=hf"], "task.background.dataset"),
        (["task.background.kind=web"], "task.background.kind"),
        (["task.source=babi", "task.path=/no/such/dir"], "task.path"),
        (["task.position=[0.5,0.2]"], "task.position"),
        (["task.curriculum=[]"], "task.curriculum"),
        (["task.curriculum=[{segments:[1]}]"], "facts_before_last_segment"),
        (["task.curriculum=[{segments:[2]},{segments:[3]}]"], "task.curriculum[0].steps"),
        (["task.curriculum=[{segments:[2],until_accuracy:90}]"], "until_accuracy"),
        (["task.curriculum=[{segments:[2],lr:0}]"], "task.curriculum[0].lr=0"),
        (["task.train_samples=3"], "task.train_samples"),
        (["trainer.mixed_precision=fp8"], "trainer.mixed_precision"),
        (["optim.scheduler.name=step"], "optim.scheduler.name"),
        (["optim.lr=0"], "optim.lr"),
        (["trainer.num_workers=-1"], "trainer.num_workers"),
        (["memory.num_tokens=-1"], "memory.num_tokens"),
        (["memory.type=assoc"], "memory.type='assoc' is not valid; choose one of tokens, armt"),
        (["memory=armt", "memory.armt.layers=[2]"], "memory.armt.layers=[2]: the backbone has 2"),
        (["memory=armt", "memory.armt.nu=0"], "memory.armt.nu=0"),
        (["memory=armt", "memory.armt.feature_map=elu"], "memory.armt.feature_map='elu'"),
        (["backbone.hidden_size=100", "backbone.num_heads=3"], "backbone.hidden_size"),
    ],
)
def test_impossible_values_fail_validation_naming_the_key(overrides, named):
    cfg = compose_config(overrides)
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    assert named in str(info.value)


def test_positions_message_names_the_fix():
    cfg = compose_config(["segment.size=250", "memory.num_tokens=10", "backbone.max_positions=256"])
    with pytest.raises(ConfigError, match=r"lower segment.size to 236"):
        validate(cfg)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_tiny_backbone_positions_fit_any_segment(family):
    """backbone/tiny sizes its positions to the segment: no segment/memory choice overflows it."""
    from rmt.train import build

    cfg = compose_config([f"backbone.family={family}", "segment=s512", "memory.num_tokens=16"])
    assert cfg.backbone.max_positions is None
    validate(cfg)
    model = build.build_model(cfg, build.build_tokenizer(cfg))
    assert model.config.max_backbone_positions() == 512 + 2 * 16


def test_pretrained_backbone_positions_are_read_from_a_local_config(tmp_path):
    from transformers import GPT2Config

    GPT2Config(n_positions=128, n_embd=32, n_layer=1, n_head=2).save_pretrained(tmp_path)
    ok = compose_config([f"backbone.pretrained={tmp_path}", "segment.size=100"])
    validate(ok)
    too_long = compose_config([f"backbone.pretrained={tmp_path}", "segment.size=120"])
    with pytest.raises(ConfigError, match="128 positions"):
        validate(too_long)
    missing = compose_config([f"backbone.pretrained={tmp_path / 'nope'}"])
    with pytest.raises(ConfigError, match="backbone.pretrained"):
        validate(missing)


# ------------------------------------------------------------- task x segment x backbone options
HUB_TASKS = {
    "babilong_pg19": "its PG19 background comes from the Hub",
    "babilong_hub": "its published BABILong rows come from the Hub",
}
ENCODERS = {"tiny_encoder", "minilm"}  # for RMTForSequenceClassification, not rmt-train's tasks
# the babilong_qaN curricula start with 1-segment samples: 32 tokens cannot hold their stories
TOO_SHORT = {(t, "s32") for t in _options("task") if t.startswith("babilong_qa")}
FAST_MATRIX = {
    ("babilong_qa1", "default", "tiny"),
    ("babilong_qa2", "s32", "tiny"),
    ("babilong_qa4", "s32", "tiny"),
    ("babilong_qa3", "s512", "tiny"),
    ("memory_demo", "s512", "tiny"),
    ("babilong_qa10", "default", "gpt2"),
    ("babilong_pg19", "s32", "tiny"),
    ("babilong_qa1", "default", "tiny_encoder"),
}


@pytest.fixture(scope="module")
def offline_tokenizer():
    return build_tokenizer()


@pytest.fixture
def quick_preflight(monkeypatch):
    """A preflight over a few samples per stage (the real one builds 64)."""
    monkeypatch.setattr(preflight, "PREFLIGHT_SAMPLES", 8)


def _matrix():
    for task in _options("task"):
        for segment in _options("segment"):
            for backbone in _options("backbone"):
                fast = (task, segment, backbone) in FAST_MATRIX
                yield pytest.param(task, segment, backbone, id=f"{task}-{segment}-{backbone}",
                                   marks=() if fast else (pytest.mark.slow,))  # fmt: skip


@pytest.mark.usefixtures("quick_preflight")
@pytest.mark.parametrize("task,segment,backbone", list(_matrix()))
def test_every_task_segment_backbone_composes_and_preflights(
    task, segment, backbone, offline_tokenizer
):
    """Each pick composes and validates; offline, the task builds its largest samples too, or
    stops naming the fix (the full cross product is slow; a representative subset is not)."""
    picks = [f"task={task}", f"segment={segment}", f"backbone={backbone}", "memory.num_tokens=10"]
    if backbone in ENCODERS:  # rmt-train's tasks generate answers: an encoder is refused
        try:
            cfg = compose_config(picks)
            _ = cfg.backbone.pretrained
        except Exception as err:  # minilm: its optional extra is not installed
            pytest.skip(f"backbone={backbone} needs its optional extra ({err})")
        with pytest.raises(ConfigError, match="is an encoder.*Pick a decoder backbone"):
            validate(cfg, check_backbone=False)
        return
    cfg = compose_config(picks)
    assert (cfg.task.name, cfg.memory.num_tokens) == (task, 10)
    hub_backbone = cfg.backbone.pretrained
    validate(cfg, check_backbone=hub_backbone is None)
    if hub_backbone is not None:
        pytest.skip(f"config validated; the preflight needs the {hub_backbone} tokenizer (Hub)")
    if task in HUB_TASKS:
        pytest.skip(f"config validated; the preflight needs the Hub: {HUB_TASKS[task]}")
    built = build.task_for(cfg, offline_tokenizer)
    if (task, segment) in TOO_SHORT:
        with pytest.raises(ConfigError, match=r"do not fit .*raise segment.size"):
            built.preflight()
    else:
        built.preflight()


@pytest.mark.usefixtures("quick_preflight")
@pytest.mark.parametrize("name", GENERATED)
def test_headline_command_for_every_generated_task(name, offline_tokenizer):
    """`rmt-train task=babilong_qaN memory.num_tokens=10`, as typed: a task option exists for
    every task the generator makes, and it trains facts anywhere over a growing number of
    segments within the default 15-minute budget, validating at the longest trained length."""
    cfg = compose_config([f"task=babilong_{name}", "memory.num_tokens=10"])
    task = cfg.task
    assert list(task.tasks) == [name] and task.source == "generated"
    assert task.min_facts is not None and task.max_facts is not None  # bounds real bAbI stories
    assert list(task.position) == [0.0, 1.0] and not task.facts_before_last_segment
    longest = [max(stage.segments) for stage in task.curriculum]
    assert longest == sorted(longest) and longest[-1] > longest[0] > 1
    assert cfg.trainer.max_minutes == 15 and cfg.backbone.pretrained is None
    assert cfg.segment.size == 64 and cfg.name == f"babilong_{name}"
    validate(cfg)
    built = build.task_for(cfg, offline_tokenizer)
    built.preflight()
    assert built.validation_length(len(task.curriculum) - 1) == longest[-1] * 64


@pytest.mark.parametrize("setting", ["partial", "mlp", True, False, "auto"])
def test_recomputation_settings_compose_and_reach_the_model_config(setting):
    cfg = compose_config([f"segment.checkpointing={str(setting).lower()}"])
    validate(cfg)
    assert build.rmt_kwargs(cfg)["segment_checkpointing"] == setting

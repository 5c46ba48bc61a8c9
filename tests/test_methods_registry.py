"""The distillation registry: every method declares a documented, checked config, its own card text and its needs,
and the CLI, the settings and the study read them (a new method is covered here without editing this file)."""

from __future__ import annotations

from dataclasses import fields

import pytest

from llmdiet.config import ConfigError
from llmdiet.distill.methods import config_types, get_method, methods, modifiers
from llmdiet.distill.settings import DistillationArguments

METHODS = list(methods())


def test_the_shipped_methods_are_registered():
    assert {"kd", "dkd", "gkd", "dml", "logit_mse"} <= set(METHODS) and {"shrink", "fake_quant"} <= set(modifiers())
    with pytest.raises(ConfigError, match="unknown distillation method"):
        get_method("nope")


@pytest.mark.parametrize("name", METHODS)
def test_every_flag_is_documented_and_a_distill_flag(name):
    own = {f.name: f for f in fields(get_method(name).config)}
    assert own, name
    assert all(f.metadata.get("help") for f in own.values()), name
    assert set(own) <= {f.name for f in fields(DistillationArguments)}


@pytest.mark.parametrize("name", METHODS)
def test_the_card_states_the_methods_own_objective(name):
    args = DistillationArguments(method=name, alpha=0.5)
    text = args.card_text()
    assert text.startswith(name), text
    if name not in ("kd", "gkd"):
        assert "KL(teacher || student) + (1 - alpha) * CE" not in text  # before: kd's formula on every card


def test_what_each_method_needs():
    assert not DistillationArguments(alpha=0.0).needs_teacher()  # plain fine-tuning loads no teacher
    assert DistillationArguments(method="dkd", alpha=0.0).needs_teacher()  # dkd ignores alpha
    assert not DistillationArguments(method="dml").needs_teacher()
    assert DistillationArguments(method="dml", dml_teacher_weight=0.5).needs_teacher()
    usable = {name for name in METHODS if DistillationArguments(method=name).cache_usable()}
    assert {"kd", "dkd"} <= usable and not {"gkd", "dml", "logit_mse"} & usable
    assert not DistillationArguments(
        student_init="copy_layers", student_encoder_layers=1, student_decoder_layers=1, hidden_weight=1.0
    ).cache_usable()


def test_config_types_are_an_mro_order():
    types = config_types()
    assert len(types) == len(set(types))
    for i, cls in enumerate(types):
        assert not any(issubclass(later, cls) for later in types[i + 1 :] if later is not cls)


def test_flags_of_other_methods_and_incompatible_modifiers_are_refused():
    with pytest.raises(ConfigError, match="--dkd_beta belongs to --method dkd, not to --method gkd"):
        DistillationArguments(method="gkd", dkd_beta=2.0)
    DistillationArguments(method="gkd", divergence="jsd")  # gkd reads kd's divergence flags (GKDConfig(KDConfig))
    with pytest.raises(ConfigError, match="--method dml does not combine with fake_quant"):
        DistillationArguments(method="dml", student_fake_quant=4)


def test_the_study_and_settings_read_the_registry_not_method_names(tmp_path):
    """study/jobs.py and study/config.py special-cased method == "dml"; settings.py hard-coded a gkd message (and told
    logit_mse it 'trains two students'); engines' TORCH_BACKENDS repeated the quantization registry."""
    from pathlib import Path

    from llmdiet.distill.methods import methods
    from llmdiet.engines import TORCH_BACKENDS
    from llmdiet.quantize.registry import METHODS
    from llmdiet.study.plan import student_outputs

    for name, entry in methods().items():
        assert entry.teacher_cache or entry.no_cache_reason, name
    assert student_outputs("m", "dml", Path("o")) == [("m", "o/student_a"), ("m-b", "o/student_b")]
    assert student_outputs("m", "kd", Path("o")) == [("m", "o")]
    assert set(TORCH_BACKENDS) == {"torch-fp32"} | {n for n, m in METHODS.items() if m.kind == "torch"}
    source = (Path(__file__).resolve().parents[1] / "llmdiet" / "study").glob("*.py")
    assert not [p.name for p in source if '== "dml"' in p.read_text()]

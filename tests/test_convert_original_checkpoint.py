import json
import os
from pathlib import Path

import pytest
import torch
import yaml

from moscale.convert_original_checkpoint import ConversionError, convert_original_checkpoint, main
from moscale.modeling_moscale import MoScaleForTextToMotion
from moscale.modeling_moscale_vq import MoScaleVQModel

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = Path(os.environ.get("MOSCALE_PARITY_FIXTURE", ROOT.parent / "shared" / "data" / "parity" / "fixture_a"))


@pytest.fixture(scope="module")
def original():
    """Paths of the authors'-format checkpoints and YAML files of the parity fixture."""
    if not (FIXTURE / "meta.json").is_file():
        raise FileNotFoundError(f"parity fixture not found at {FIXTURE}; set MOSCALE_PARITY_FIXTURE")
    paths = json.loads((FIXTURE / "meta.json").read_text())["checkpoints"]
    return {
        "vq_checkpoint": FIXTURE / paths["vq"]["path"],
        "vq_config": FIXTURE / paths["vq_yaml"],
        "transformer_checkpoint": FIXTURE / paths["moscale"]["path"],
        "transformer_config": FIXTURE / paths["moscale_yaml"],
    }


def with_modified_checkpoint(original, tmp_path, which: str, edit) -> dict:
    entry = "vq_model" if which == "vq_checkpoint" else "moscale"
    checkpoint = torch.load(original[which], weights_only=True)
    edit(checkpoint[entry])
    path = tmp_path / f"{which}.tar"
    torch.save(checkpoint, path)
    return {**original, which: path}


def with_modified_yaml(original, tmp_path, which: str, edit) -> dict:
    config = yaml.safe_load(Path(original[which]).read_text())
    edit(config)
    path = tmp_path / f"{which}.yaml"
    path.write_text(yaml.safe_dump(config))
    return {**original, which: path}


def test_cli_help_names_both_output_folders(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "vq_model" in text and "transformer" in text and "--transformer-config" in text


def test_cli_writes_loadable_folders(original, tmp_path, capsys):
    main(
        [
            "--vq-checkpoint", str(original["vq_checkpoint"]),
            "--vq-config", str(original["vq_config"]),
            "--transformer-checkpoint", str(original["transformer_checkpoint"]),
            "--transformer-config", str(original["transformer_config"]),
            "--output-dir", str(tmp_path / "out"),
        ]
    )  # fmt: skip
    assert "wrote" in capsys.readouterr().out
    vq = MoScaleVQModel.from_pretrained(tmp_path / "out" / "vq_model")
    transformer = MoScaleForTextToMotion.from_pretrained(tmp_path / "out" / "transformer")
    reference = torch.load(original["vq_checkpoint"], weights_only=True)["vq_model"]
    assert torch.equal(vq.quantizer.codebook, reference["quantizer.codebook"])
    assert torch.equal(vq.encoder.stages[0].downsample.weight, reference["encoder.res_blocks.0.0.weight"])
    reference = torch.load(original["transformer_checkpoint"], weights_only=True)["moscale"]
    assert torch.equal(transformer.uncond_text_embedding, reference["cfg_uncond"])
    assert torch.equal(transformer.blocks[0].self_attn.qkv_proj.weight, reference["masked_blocks.0.attn.mat_qkv.weight"])


def test_cli_reports_errors_without_a_traceback(original, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "--vq-checkpoint", str(tmp_path / "missing.tar"),
                "--vq-config", str(original["vq_config"]),
                "--transformer-checkpoint", str(original["transformer_checkpoint"]),
                "--transformer-config", str(original["transformer_config"]),
                "--output-dir", str(tmp_path / "out"),
            ]
        )  # fmt: skip
    assert exit_info.value.code == 1
    assert "checkpoint not found" in capsys.readouterr().err


def test_unknown_key_is_named(original, tmp_path):
    paths = with_modified_checkpoint(
        original, tmp_path, "vq_checkpoint", lambda sd: sd.__setitem__("encoder.extra.weight", torch.zeros(3))
    )
    with pytest.raises(ConversionError, match=r"unknown key 'encoder\.extra\.weight'"):
        convert_original_checkpoint(**paths)


def test_missing_key_is_named(original, tmp_path):
    paths = with_modified_checkpoint(original, tmp_path, "transformer_checkpoint", lambda sd: sd.pop("head.bias"))
    with pytest.raises(ConversionError, match=r"missing key\(s\).*head\.bias"):
        convert_original_checkpoint(**paths)


def test_config_that_does_not_fit_the_weights_names_the_key(original, tmp_path):
    paths = with_modified_yaml(
        original, tmp_path, "transformer_config", lambda c: c["model"].__setitem__("num_layers", 1)
    )
    with pytest.raises(ConversionError, match=r"unknown key 'masked_blocks\.1\."):
        convert_original_checkpoint(**paths)
    paths = with_modified_yaml(original, tmp_path, "vq_config", lambda c: c["model"].__setitem__("width", 32))
    with pytest.raises(ConversionError, match=r"key 'encoder\.embed\.0\.weight' has shape"):
        convert_original_checkpoint(**paths)


def test_recomputed_buffers_are_checked(original, tmp_path):
    def break_mask(state_dict):
        state_dict["attn_bias_for_masking"] = torch.zeros_like(state_dict["attn_bias_for_masking"])

    paths = with_modified_checkpoint(original, tmp_path, "transformer_checkpoint", break_mask)
    with pytest.raises(ConversionError, match="attn_bias_for_masking"):
        convert_original_checkpoint(**paths)


def test_corrupt_and_wrong_files(original, tmp_path):
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(ConversionError, match="not a readable PyTorch checkpoint"):
        convert_original_checkpoint(**{**original, "vq_checkpoint": garbage})
    with pytest.raises(ConversionError, match="has no 'vq_model' entry"):
        convert_original_checkpoint(**{**original, "vq_checkpoint": original["transformer_checkpoint"]})
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        convert_original_checkpoint(**{**original, "transformer_checkpoint": tmp_path / "nope.tar"})
    pickled_object = tmp_path / "object.tar"
    torch.save({"vq_model": {"encoder.embed.0.weight": Path("not a tensor")}}, pickled_object)
    with pytest.raises(ConversionError, match="not a readable PyTorch checkpoint"):
        convert_original_checkpoint(**{**original, "vq_checkpoint": pickled_object})
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("model: [unclosed")
    with pytest.raises(ConversionError, match="not valid YAML"):
        convert_original_checkpoint(**{**original, "vq_config": bad_yaml})


@pytest.mark.parametrize(
    "which, edit, message",
    [
        ("vq_config", lambda c: c["quantizer"].__setitem__("quant_resi", 0.5), "quant_resi"),
        ("vq_config", lambda c: c["model"].__setitem__("vq_norm", "LN"), "vq_norm"),
        ("vq_config", lambda c: c["quantizer"].pop("nb_code"), "quantizer.nb_code"),
        ("transformer_config", lambda c: c["model"].__setitem__("use_crossattn", False), "use_crossattn"),
        ("transformer_config", lambda c: c["text_embedder"].pop("dim_embed"), "text_embedder.dim_embed"),
    ],
)
def test_unsupported_or_incomplete_configs(original, tmp_path, which, edit, message):
    paths = with_modified_yaml(original, tmp_path, which, edit)
    with pytest.raises(ConversionError, match=message):
        convert_original_checkpoint(**paths)

import json
import pickle
import re
from pathlib import Path

import pytest
import torch
import yaml

from moscale.models.convert_original_checkpoint import ConversionError, convert_original_checkpoint, main
from moscale.models.modeling_moscale import MoScaleForTextToMotion
from moscale.models.modeling_moscale_vq import MoScaleVQModel
from tests.shared_data import PARITY_FIXTURE as FIXTURE


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
    assert "vq_model" in text and "transformer" in text and "--transformer_config" in text


def test_cli_writes_loadable_folders(original, tmp_path, capsys):
    main(
        [
            "--vq_checkpoint", str(original["vq_checkpoint"]),
            "--vq_config", str(original["vq_config"]),
            "--transformer_checkpoint", str(original["transformer_checkpoint"]),
            "--transformer_config", str(original["transformer_config"]),
            "--output_dir", str(tmp_path / "out"),
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
    qkv = reference["masked_blocks.0.attn.mat_qkv.weight"]
    assert torch.equal(transformer.blocks[0].self_attn.qkv_proj.weight, qkv)


def test_cli_reports_errors_without_a_traceback(original, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "--vq_checkpoint", str(tmp_path / "missing.tar"),
                "--vq_config", str(original["vq_config"]),
                "--transformer_checkpoint", str(original["transformer_checkpoint"]),
                "--transformer_config", str(original["transformer_config"]),
                "--output_dir", str(tmp_path / "out"),
            ]
        )  # fmt: skip
    assert exit_info.value.code == 2
    assert "checkpoint not found" in capsys.readouterr().err


class _RunsCode:
    def __reduce__(self):
        return print, ("this pickle ran code",)


def test_a_pickle_that_runs_code_is_refused_without_suggesting_pickle(original, tmp_path, capsys):
    checkpoint = tmp_path / "net_best_fid.tar"
    checkpoint.write_bytes(pickle.dumps({"vq_model": _RunsCode()}, protocol=2))
    with pytest.raises(ConversionError) as raised:
        convert_original_checkpoint(**{**original, "vq_checkpoint": checkpoint})
    assert str(raised.value) == (
        f"{checkpoint} is not a plain checkpoint of tensors: it is damaged, or it asks to build other objects or run "
        "code while loading. It was refused and must not be loaded with pickle (torch.load with weights_only=False); "
        "expected the authors' .tar file as written by torch.save"
    )
    assert "likely succeed" not in str(raised.value)
    assert "this pickle ran code" not in capsys.readouterr().out


def test_a_binary_file_as_config_is_named(original, tmp_path):
    binary = tmp_path / "train_hrvqvae.yaml"
    binary.write_bytes(bytes(range(128, 256)) * 4)
    with pytest.raises(ConversionError) as raised:
        convert_original_checkpoint(**{**original, "vq_config": binary})
    assert str(raised.value) == (
        f"{binary} is not a text file, so not a YAML config; pass the authors' train_*.yaml (is it a checkpoint?)"
    )
    with pytest.raises(ConversionError, match="is not a text file"):
        convert_original_checkpoint(**{**original, "transformer_config": original["transformer_checkpoint"]})


def test_unknown_key_is_named(original, tmp_path):
    paths = with_modified_checkpoint(
        original, tmp_path, "vq_checkpoint", lambda sd: sd.__setitem__("encoder.extra.weight", torch.zeros(3))
    )
    with pytest.raises(ConversionError, match=r"unknown key 'encoder\.extra\.weight'"):
        convert_original_checkpoint(**paths)


def test_missing_key_is_named(original, tmp_path):
    paths = with_modified_checkpoint(original, tmp_path, "transformer_checkpoint", lambda sd: sd.pop("head.bias"))
    with pytest.raises(ConversionError, match=r"missing key\(s\) 'head\.bias'"):
        convert_original_checkpoint(**paths)
    paths = with_modified_checkpoint(
        original, tmp_path, "transformer_checkpoint", lambda sd: sd.pop("masked_blocks.0.attn.proj.weight")
    )
    message = r"missing key\(s\) 'masked_blocks\.0\.attn\.proj\.weight' \(our blocks\.0\.self_attn\.out_proj\.weight\)$"
    with pytest.raises(ConversionError, match=message):
        convert_original_checkpoint(**paths)
    paths = with_modified_checkpoint(original, tmp_path, "vq_checkpoint", lambda sd: sd.pop("quantizer.codebook"))
    with pytest.raises(ConversionError, match=r"missing key\(s\) 'quantizer\.codebook' \(our quantizer\.codebook\)$"):
        convert_original_checkpoint(**paths)


def test_every_authors_key_is_named_back_from_ours(original):
    """Missing-key errors name the authors' key: the reverse of the key rules gives back every checkpoint key."""
    from moscale.models.convert_original_checkpoint import (
        _MOSCALE_DERIVED,
        _MOSCALE_KEY_RULES,
        _VQ_DERIVED,
        _VQ_KEY_RULES,
        _original_key,
        _rename,
    )  # fmt: skip

    for which, entry, rules, derived in (
        ("vq_checkpoint", "vq_model", _VQ_KEY_RULES, _VQ_DERIVED),
        ("transformer_checkpoint", "moscale", _MOSCALE_KEY_RULES, _MOSCALE_DERIVED),
    ):
        keys = [k for k in torch.load(original[which], weights_only=True)[entry] if not re.fullmatch(derived, k)]
        assert keys
        for key in keys:
            assert _original_key(_rename(key, rules), rules) == key


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
    with pytest.raises(
        ConversionError, match="is not a plain checkpoint of tensors: .* must not be loaded with pickle"
    ):
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


# ----------------------------------------------------------------------------------- other sizes, from the key spec
def authors_vq_keys(down_t: int, depth: int) -> list[str]:
    """The authors' HRVQVAE state-dict keys (parity README, section 5) for the given sizes."""
    wb = ("weight", "bias")
    attn_modules = ("norm1", "norm2", "q_proj", "k_proj", "v_proj", "out_proj", "gate_proj", "ffn.0", "ffn.3")
    attn = [f"{n}.{p}" for n in attn_modules for p in wb]
    keys = [f"encoder.embed.0.{p}" for p in wb] + [f"decoder.embed.0.{p}" for p in wb]
    for i in range(down_t):
        keys += [f"encoder.res_blocks.{i}.0.{p}" for p in wb] + [f"decoder.res_blocks.{i}.2.{p}" for p in wb]
        for j in range(depth):
            keys += [f"encoder.res_blocks.{i}.1.model.{j}.conv{c}.{p}" for c in (1, 2) for p in wb]
            keys += [f"decoder.res_blocks.{i}.0.model.{j}.conv{c}.{p}" for c in (1, 2) for p in wb]
        for side in ("encoder", "decoder"):
            keys += [f"{side}.attn_blocks.{i}.{name}" for name in attn] + [f"{side}.attn_blocks.{i}.rope.inv_freq"]
    keys += [f"encoder.outproj.{p}" for p in wb] + [f"decoder.outproj.{k}.{p}" for k in (0, 2) for p in wb]
    return keys + ["quantizer.codebook"]


def authors_moscale_keys(num_layers: int) -> list[str]:
    wb = ("weight", "bias")
    keys = ["token_emb", "cfg_uncond", "pos_start", "masked_token_embedding", "padded_token_embedding", "lvl_1L"]
    keys += ["attn_bias_for_masking", "text_norm.weight", "text_proj_for_sos.q_tokens", "lvl_embed.weight"]
    linears = ("input_process", "token_dim_proj", "latent_dim_proj", "head_nm.ada_lin.1", "head")
    keys += [f"{m}.{p}" for m in linears for p in wb]
    keys += [f"text_proj_for_ca.{k}.{p}" for k in (0, 2) for p in wb]
    ca = ["mat_q.weight", "mat_q.bias", "mat_kv.weight", "v_bias", "zero_k_bias", "proj.weight", "proj.bias"]
    keys += [f"text_proj_for_sos.ca.{name}" for name in ca]
    for b in range(num_layers):
        self_attn = ("mat_qkv.weight", "q_bias", "v_bias", "zero_k_bias", "proj.weight", "proj.bias")
        keys += [f"masked_blocks.{b}.attn.{n}" for n in self_attn]
        keys += [f"masked_blocks.{b}.ca.{name}" for name in ca]
        keys += [f"masked_blocks.{b}.{m}.{p}" for m in ("ca_norm", "ffn.fc1", "ffn.fc2", "ada_lin.1") for p in wb]
    return keys


def test_conversion_of_other_sizes_is_exact(tmp_path):
    """fixture_b-like sizes (VQ width 80, depth 3; one pool head; 3 layers): authors' keys built from the spec."""
    from moscale.models.convert_original_checkpoint import _MOSCALE_KEY_RULES, _VQ_KEY_RULES, _rename
    from moscale.models.modeling_moscale import MoScaleConfig, level_of_position
    from moscale.models.modeling_moscale_vq import MoScaleVQConfig

    torch.manual_seed(0)
    vq_source = MoScaleVQModel(MoScaleVQConfig(code_dim=48, num_codes=96, width=80, depth=3))
    transformer_source = MoScaleForTextToMotion(
        MoScaleConfig(
            num_codes=96,
            code_dim=48,
            condition_dim=128,
            hidden_size=96,
            num_layers=3,
            num_attention_heads=6,
            text_dim=64,
        )
    )
    vq_state = vq_source.state_dict()
    vq_original = {}
    for key in authors_vq_keys(down_t=2, depth=3):
        if key.endswith("rope.inv_freq"):
            vq_original[key] = 1.0 / (10000 ** (torch.arange(0, 10, 2).float() / 10))
        else:
            vq_original[key] = vq_state[_rename(key, _VQ_KEY_RULES)].clone()
    levels = level_of_position(transformer_source.config.patch_sizes)
    derived = {
        "lvl_1L": levels[None],
        "attn_bias_for_masking": torch.where(levels[None] <= levels[:, None], 0.0, -torch.inf)[None, None],
    }
    state = transformer_source.state_dict()
    moscale_original = {}
    for key in authors_moscale_keys(num_layers=3):
        if key in derived:
            moscale_original[key] = derived[key]
        elif key.endswith("zero_k_bias"):
            moscale_original[key] = torch.zeros(96 if key.startswith("masked") else 128)
        else:
            moscale_original[key] = state[_rename(key, _MOSCALE_KEY_RULES)].clone()
    torch.save({"vq_model": vq_original, "ep": 0}, tmp_path / "vq.tar")
    torch.save({"moscale": moscale_original, "ep": 0}, tmp_path / "moscale.tar")
    vq_yaml = {
        "data": {"dim_pose": 263},
        "quantizer": {"code_dim": 48, "nb_code": 96, "scales": [8, 4, 2, 1], "quant_resi": 0, "mu": 0.99},
        "model": {
            "down_t": 2,
            "stride_t": 2,
            "width": 80,
            "depth": 3,
            "dilation_growth_rate": 3,
            "vq_act": "relu",
            "use_attn": True,
            "vq_norm": "None",
        },  # fmt: skip
        "training": {"lambda_commit": 0.02, "lambda_expicit": 0.5},
    }
    moscale_yaml = {
        "data": {"max_motion_length": 196, "max_text_length": 20},
        "text_embedder": {"dim_embed": 64, "version": "google/t5-v1_1-base"},
        "model": {
            "latent_dim": 128,
            "head_latent_dim": 96,
            "num_layers": 3,
            "n_heads": 6,
            "mlp_ratio": 4,
            "use_crossattn": True,
            "use_learned_token_map": True,
            "attn_l2_norm": False,
        },  # fmt: skip
        "training": {"cond_drop_prob": 0.1, "sample_level_times": [1, 2, 5, 10]},
    }
    (tmp_path / "vq.yaml").write_text(yaml.safe_dump(vq_yaml))
    (tmp_path / "moscale.yaml").write_text(yaml.safe_dump(moscale_yaml))
    vq, transformer = convert_original_checkpoint(
        tmp_path / "vq.tar", tmp_path / "vq.yaml", tmp_path / "moscale.tar", tmp_path / "moscale.yaml"
    )
    for name, tensor in transformer_source.state_dict().items():
        assert torch.equal(tensor, transformer.state_dict()[name]), name
    for name, tensor in vq_source.state_dict().items():
        if not name.startswith("quantizer."):
            assert torch.equal(tensor, vq.state_dict()[name]), name
    assert torch.equal(vq.quantizer.codebook, vq_source.quantizer.codebook)
    assert transformer.config.condition_dim // transformer.config.text_pool_head_dim == 1

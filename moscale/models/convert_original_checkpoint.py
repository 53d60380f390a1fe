"""Convert the authors' MoScale checkpoints (github.com/zhiwei-zzz/MoScale) into `save_pretrained` folders.

Inputs are the `.tar` files their trainers write, `{'vq_model': state_dict, 'ep': ...}` for the tokenizer (like the
authors' evaluation we also accept the entry name 'model') and `{'moscale': state_dict, 'ep': ...}` for the
transformer, and the YAML files next to them (`train_hrvqvae.yaml`, `train_moscale.yaml`). Outputs are
`OUTPUT_DIR/vq_model` ([`MoScaleVQModel`]) and `OUTPUT_DIR/transformer` ([`MoScaleForTextToMotion`]).

    moscale convert \\
        --vq_checkpoint checkpoint_dir/humanml3d/hrvqvae/hrvqvae/model/net_best_fid.tar \\
        --vq_config checkpoint_dir/humanml3d/hrvqvae/hrvqvae/train_hrvqvae.yaml \\
        --transformer_checkpoint checkpoint_dir/humanml3d/moscale/moscale/model/net_best_fid.tar \\
        --transformer_config checkpoint_dir/humanml3d/moscale/moscale/train_moscale.yaml \\
        --output_dir converted/moscale-humanml3d

Every checkpoint tensor must be consumed and every model tensor filled: an unknown or missing key, or a shape
mismatch, is an error that names the key.
"""

from __future__ import annotations

import argparse
import pickle
import re
from pathlib import Path
from typing import Any

import torch
import yaml

from moscale.models.modeling_moscale import MoScaleConfig, MoScaleForTextToMotion, level_of_position
from moscale.models.modeling_moscale_vq import MoScaleVQConfig, MoScaleVQModel


class ConversionError(ValueError):
    """The checkpoint or config does not match the authors' format (the message says what and where)."""


# (authors' key pattern, our key template). Patterns are full matches; groups are re-used in the template.
_VQ_KEY_RULES = [
    (r"(encoder|decoder)\.embed\.0\.(weight|bias)", r"\1.conv_in.\2"),
    (r"encoder\.res_blocks\.(\d+)\.0\.(weight|bias)", r"encoder.stages.\1.downsample.\2"),
    (r"encoder\.res_blocks\.(\d+)\.1\.model\.(\d+)\.(conv[12])\.(weight|bias)", r"encoder.stages.\1.resnet.\2.\3.\4"),
    (r"decoder\.res_blocks\.(\d+)\.0\.model\.(\d+)\.(conv[12])\.(weight|bias)", r"decoder.stages.\1.resnet.\2.\3.\4"),
    (r"decoder\.res_blocks\.(\d+)\.2\.(weight|bias)", r"decoder.stages.\1.conv.\2"),
    (
        r"(encoder|decoder)\.attn_blocks\.(\d+)\."
        r"((?:norm[12]|[qkv]_proj|out_proj|gate_proj|ffn\.[03])\.(?:weight|bias))",
        r"\1.stages.\2.attention.\3",
    ),
    (r"encoder\.outproj\.(weight|bias)", r"encoder.conv_out.\1"),
    (r"decoder\.outproj\.0\.(weight|bias)", r"decoder.conv_mid.\1"),
    (r"decoder\.outproj\.2\.(weight|bias)", r"decoder.conv_out.\1"),
    (r"quantizer\.codebook", r"quantizer.codebook"),
]

_MOSCALE_KEY_RULES = [
    (r"token_emb", r"token_embedding"),
    (r"cfg_uncond", r"uncond_text_embedding"),
    (r"pos_start", r"start_position_embedding"),
    (r"masked_token_embedding", r"mask_token_embedding"),
    (r"padded_token_embedding", r"pad_token_embedding"),
    (r"input_process\.(weight|bias)", r"prev_scale_proj.\1"),
    (r"token_dim_proj\.(weight|bias)", r"token_proj.\1"),
    (r"latent_dim_proj\.(weight|bias)", r"input_proj.\1"),
    (r"text_norm\.weight", r"text_norm.weight"),
    (r"text_proj_for_sos\.q_tokens", r"text_pool.query_tokens"),
    (r"text_proj_for_sos\.ca\.mat_q\.(weight|bias)", r"text_pool.attention.q_proj.\1"),
    (r"text_proj_for_sos\.ca\.mat_kv\.weight", r"text_pool.attention.kv_proj.weight"),
    (r"text_proj_for_sos\.ca\.v_bias", r"text_pool.attention.v_bias"),
    (r"text_proj_for_sos\.ca\.proj\.(weight|bias)", r"text_pool.attention.out_proj.\1"),
    (r"text_proj_for_ca\.([02])\.(weight|bias)", r"text_proj.\1.\2"),
    (r"lvl_embed\.weight", r"level_embedding.weight"),
    (r"masked_blocks\.(\d+)\.attn\.mat_qkv\.weight", r"blocks.\1.self_attn.qkv_proj.weight"),
    (r"masked_blocks\.(\d+)\.attn\.(q_bias|v_bias)", r"blocks.\1.self_attn.\2"),
    (r"masked_blocks\.(\d+)\.attn\.proj\.(weight|bias)", r"blocks.\1.self_attn.out_proj.\2"),
    (r"masked_blocks\.(\d+)\.ca\.mat_q\.(weight|bias)", r"blocks.\1.cross_attn.q_proj.\2"),
    (r"masked_blocks\.(\d+)\.ca\.mat_kv\.weight", r"blocks.\1.cross_attn.kv_proj.weight"),
    (r"masked_blocks\.(\d+)\.ca\.v_bias", r"blocks.\1.cross_attn.v_bias"),
    (r"masked_blocks\.(\d+)\.ca\.proj\.(weight|bias)", r"blocks.\1.cross_attn.out_proj.\2"),
    (r"masked_blocks\.(\d+)\.ca_norm\.(weight|bias)", r"blocks.\1.cross_attn_norm.\2"),
    (r"masked_blocks\.(\d+)\.ffn\.(fc[12])\.(weight|bias)", r"blocks.\1.ffn.\2.\3"),
    (r"masked_blocks\.(\d+)\.ada_lin\.1\.(weight|bias)", r"blocks.\1.adaln_modulation.\2"),
    (r"head_nm\.ada_lin\.1\.(weight|bias)", r"head_adaln_modulation.\1"),
    (r"head\.(weight|bias)", r"head.\1"),
]

# Buffers the authors save but we recompute; the converter checks they hold what we would compute.
_VQ_DERIVED = r"(encoder|decoder)\.attn_blocks\.\d+\.rope\.inv_freq"
_MOSCALE_DERIVED = r"lvl_1L|attn_bias_for_masking|.*zero_k_bias"


# ------------------------------------------------------------------------------------------------------- loading
def load_original_checkpoint(path: str | Path, entries: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """`torch.load(path, weights_only=True)[entry]` for the first entry present, with errors that say what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # torch's own message suggests weights_only=False, which would run whatever code the file names.
        raise ConversionError(
            f"{path} is not a plain checkpoint of tensors: it is damaged, or it asks to build other objects or run "
            "code while loading. It was refused and must not be loaded with pickle (torch.load with "
            "weights_only=False); expected the authors' .tar file as written by torch.save"
        ) from error
    except Exception as error:  # torch.load raises many types on damaged files
        raise ConversionError(
            f"{path} is not a readable PyTorch checkpoint ({type(error).__name__}: {error}); expected the authors' "
            f".tar file as written by torch.save"
        ) from error
    entry = next((e for e in entries if isinstance(checkpoint, dict) and e in checkpoint), None)
    if entry is None:
        found = sorted(checkpoint) if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise ConversionError(f"{path} has no '{entries[0]}' entry (found {found}); is it the right checkpoint?")
    state_dict = checkpoint[entry]
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise ConversionError(f"{path}['{entry}'] is not a state dict of tensors")
    return state_dict


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config not found: {path}")
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConversionError(
            f"{path} is not a text file, so not a YAML config; pass the authors' train_*.yaml (is it a checkpoint?)"
        ) from None
    except yaml.YAMLError as error:
        raise ConversionError(f"{path} is not valid YAML: {error}") from error
    if not isinstance(config, dict):
        raise ConversionError(f"{path} does not hold a YAML mapping")
    return config


def _get(config: dict, dotted: str, source: str, default: Any = ...) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            if default is not ...:
                return default
            raise ConversionError(f"{source} is missing the field '{dotted}'")
        node = node[part]
    return node


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConversionError(message)


# -------------------------------------------------------------------------------------------------------- configs
def vq_config_from_yaml(vq_yaml: dict, max_motion_length: int = 196, source: str = "VQ config") -> MoScaleVQConfig:
    """The authors' `train_hrvqvae.yaml` -> [`MoScaleVQConfig`] (unsupported options are errors)."""
    quant_resi = float(_get(vq_yaml, "quantizer.quant_resi", source, 0))
    _require(abs(quant_resi) < 1e-6, f"{source}: quantizer.quant_resi={quant_resi} (phi convolutions) is not supported")
    _require(int(_get(vq_yaml, "model.stride_t", source, 2)) == 2, f"{source}: only model.stride_t=2 is supported")
    norm = _get(vq_yaml, "model.vq_norm", source, None)
    _require(norm in (None, "None"), f"{source}: model.vq_norm={norm!r} is not supported (only None)")
    dropout_prob = float(_get(vq_yaml, "quantizer.quantize_dropout_prob", source, 0))
    _require(dropout_prob == 0, f"{source}: quantizer.quantize_dropout_prob={dropout_prob} is not supported (only 0)")
    for weight in ("lambda_fk", "lambda_global"):
        value = float(_get(vq_yaml, f"training.{weight}", source, 0))
        _require(value == 0, f"{source}: training.{weight}={value} is not supported (only 0)")
    return MoScaleVQConfig(
        motion_dim=int(_get(vq_yaml, "data.dim_pose", source)),
        code_dim=int(_get(vq_yaml, "quantizer.code_dim", source)),
        num_codes=int(_get(vq_yaml, "quantizer.nb_code", source)),
        scales=tuple(_get(vq_yaml, "quantizer.scales", source)),
        width=int(_get(vq_yaml, "model.width", source)),
        depth=int(_get(vq_yaml, "model.depth", source)),
        down_t=int(_get(vq_yaml, "model.down_t", source)),
        dilation_growth_rate=int(_get(vq_yaml, "model.dilation_growth_rate", source)),
        activation=str(_get(vq_yaml, "model.vq_act", source)),
        use_attention=bool(_get(vq_yaml, "model.use_attn", source)),
        ema_decay=float(_get(vq_yaml, "quantizer.mu", source)),
        commit_loss_weight=float(_get(vq_yaml, "training.lambda_commit", source, 0.02)),
        joint_position_loss_weight=float(_get(vq_yaml, "training.lambda_expicit", source, 0.5)),
        max_motion_length=max_motion_length,
    )


def moscale_config_from_yaml(
    moscale_yaml: dict, vq_config: MoScaleVQConfig, source: str = "transformer config"
) -> MoScaleConfig:
    """The authors' `train_moscale.yaml` (+ the tokenizer's config) -> [`MoScaleConfig`]."""
    for flag, wanted in (("use_crossattn", True), ("use_learned_token_map", True), ("attn_l2_norm", False)):
        value = _get(moscale_yaml, f"model.{flag}", source, not wanted)
        _require(bool(value) == wanted, f"{source}: model.{flag}={value} is not supported (only {wanted})")
    condition_dim = int(_get(moscale_yaml, "model.latent_dim", source))
    return MoScaleConfig(
        num_codes=vq_config.num_codes,
        code_dim=vq_config.code_dim,
        condition_dim=condition_dim,
        hidden_size=int(_get(moscale_yaml, "model.head_latent_dim", source, condition_dim)),
        num_layers=int(_get(moscale_yaml, "model.num_layers", source)),
        num_attention_heads=int(_get(moscale_yaml, "model.n_heads", source)),
        mlp_ratio=float(_get(moscale_yaml, "model.mlp_ratio", source, 4)),
        text_dim=int(_get(moscale_yaml, "text_embedder.dim_embed", source)),
        max_text_length=int(_get(moscale_yaml, "data.max_text_length", source)),
        text_pool_head_dim=64 if condition_dim > 4096 else 128,
        scales=vq_config.scales,
        max_motion_length=int(_get(moscale_yaml, "data.max_motion_length", source)),
        unit_length=vq_config.unit_length,
        dropout=float(_get(moscale_yaml, "model.dropout", source, 0.1)),
        attention_dropout=float(_get(moscale_yaml, "model.attn_drop_rate", source, 0.0)),
        cond_drop_prob=float(_get(moscale_yaml, "training.cond_drop_prob", source, 0.1)),
        perturb_rate=tuple(_get(moscale_yaml, "training.perturb_rate", source, (0.0, 0.0))),
        sample_steps_per_scale=tuple(
            _get(moscale_yaml, "training.sample_level_times", source, (1,) * len(vq_config.scales))
        ),
        text_encoder_name=str(_get(moscale_yaml, "text_embedder.version", source, "google/t5-v1_1-base")),
    )


# ------------------------------------------------------------------------------------------------------- weights
def _rename(key: str, rules: list[tuple[str, str]]) -> str | None:
    for pattern, template in rules:
        match = re.fullmatch(pattern, key)
        if match:
            return match.expand(template)
    return None


def _top_level_groups(pattern: str) -> list[tuple[int, int]]:
    """(start, stop) spans of the outermost capturing groups of a key pattern, in group order."""
    spans, depth, start, i = [], 0, 0, 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            i += 2
            continue
        if char == "(":
            if depth == 0:
                start = i
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0 and not pattern.startswith("(?:", start):
                spans.append((start, i + 1))
        i += 1
    return spans


def _original_key(key: str, rules: list[tuple[str, str]]) -> str | None:
    """The authors' key that `_rename` maps to our `key` (so a missing-key error names what the checkpoint lacks)."""
    for pattern, template in rules:
        parts = re.split(r"\\(\d)", template)  # literal, group number, literal, ...
        template_regex = "".join(re.escape(p) if i % 2 == 0 else f"(?P<g{p}>.+?)" for i, p in enumerate(parts))
        match = re.fullmatch(template_regex, key)
        if match is None:
            continue
        original, end = "", 0
        for number, (start, stop) in enumerate(_top_level_groups(pattern), start=1):
            original += pattern[end:start].replace("\\", "") + (match.groupdict().get(f"g{number}") or "")
            end = stop
        original += pattern[end:].replace("\\", "")
        if _rename(original, rules) == key:
            return original
    return None


def _map_state_dict(
    original: dict[str, torch.Tensor],
    model: torch.nn.Module,
    rules: list[tuple[str, str]],
    derived_pattern: str,
    check_derived,
    fill_extra,
    source: str,
) -> dict[str, torch.Tensor]:
    expected = model.state_dict()
    converted: dict[str, torch.Tensor] = {}
    for key, tensor in original.items():
        if re.fullmatch(derived_pattern, key):
            check_derived(key, tensor)
            continue
        new_key = _rename(key, rules)
        if new_key is None or new_key not in expected:
            raise ConversionError(f"{source}: unknown key '{key}' (not part of the supported MoScale architecture)")
        if tuple(tensor.shape) != tuple(expected[new_key].shape):
            raise ConversionError(
                f"{source}: key '{key}' has shape {tuple(tensor.shape)}, the config implies "
                f"{tuple(expected[new_key].shape)} (does the YAML belong to this checkpoint?)"
            )
        converted[new_key] = tensor.to(expected[new_key].dtype)
    converted.update(fill_extra(converted))
    missing = sorted(set(expected) - set(converted))
    if missing:
        # Keys with no authors' counterpart (the EMA statistics) are only missing because the key they derive from is.
        originals = [(_original_key(m, rules), m) for m in missing]
        names = [f"'{original}' (our {ours})" for original, ours in originals if original] or missing
        raise ConversionError(f"{source}: missing key(s) {', '.join(names)}")
    return converted


def convert_vq_state_dict(original: dict[str, torch.Tensor], config: MoScaleVQConfig) -> MoScaleVQModel:
    """The authors' HRVQVAE state dict -> a loaded [`MoScaleVQModel`] in eval mode."""
    with torch.device("meta"):
        skeleton = MoScaleVQModel(config)
    head_dim = config.width // config.attention_heads
    expected_inv_freq = 1.0 / (10000 ** (torch.arange(0, head_dim, 2).float() / head_dim))

    def check_derived(key: str, tensor: torch.Tensor) -> None:
        if tensor.shape != expected_inv_freq.shape or not torch.allclose(tensor.float(), expected_inv_freq):
            raise ConversionError(f"VQ checkpoint: buffer '{key}' differs from the rotary frequencies we recompute")

    def fill_extra(converted: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if "quantizer.codebook" not in converted:
            return {}
        # A released codebook counts as initialised: EMA statistics restart from it (one count per code).
        codebook = converted["quantizer.codebook"]
        return {
            "quantizer.code_sum": codebook.clone(),
            "quantizer.code_count": torch.ones(codebook.shape[0]),
            "quantizer.initialized": torch.ones((), dtype=torch.long),
        }

    state_dict = _map_state_dict(
        original, skeleton, _VQ_KEY_RULES, _VQ_DERIVED, check_derived, fill_extra, "VQ checkpoint"
    )
    model = MoScaleVQModel(config)
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def convert_moscale_state_dict(original: dict[str, torch.Tensor], config: MoScaleConfig) -> MoScaleForTextToMotion:
    """The authors' MoScale state dict (no T5 weights) -> a loaded [`MoScaleForTextToMotion`] in eval mode."""
    with torch.device("meta"):
        skeleton = MoScaleForTextToMotion(config)
    level_L = level_of_position(config.patch_sizes)
    expected_buffers = {
        "lvl_1L": level_L[None],
        "attn_bias_for_masking": torch.where(level_L[None, :] <= level_L[:, None], 0.0, -torch.inf)[None, None],
    }

    def check_derived(key: str, tensor: torch.Tensor) -> None:
        if key.endswith("zero_k_bias"):
            ok = not bool(tensor.any())
        else:
            wanted = expected_buffers[key]
            ok = tensor.shape == wanted.shape and torch.equal(tensor.to(wanted.dtype), wanted)
        if not ok:
            raise ConversionError(
                f"transformer checkpoint: buffer '{key}' differs from what the config implies (scales "
                f"{config.scales}, {config.sequence_length} tokens); check max_motion_length and the VQ scales"
            )

    state_dict = _map_state_dict(
        original, skeleton, _MOSCALE_KEY_RULES, _MOSCALE_DERIVED, check_derived, lambda _: {}, "transformer checkpoint"
    )
    model = MoScaleForTextToMotion(config)
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def convert_original_checkpoint(
    vq_checkpoint: str | Path,
    vq_config: str | Path,
    transformer_checkpoint: str | Path,
    transformer_config: str | Path,
    output_dir: str | Path | None = None,
) -> tuple[MoScaleVQModel, MoScaleForTextToMotion]:
    """Convert both checkpoints; with `output_dir`, save them to `output_dir/vq_model` and `output_dir/transformer`."""
    vq_yaml = load_yaml(vq_config)
    moscale_yaml = load_yaml(transformer_config)
    max_motion_length = int(_get(moscale_yaml, "data.max_motion_length", str(transformer_config), 196))
    vq_cfg = vq_config_from_yaml(vq_yaml, max_motion_length, source=str(vq_config))
    moscale_cfg = moscale_config_from_yaml(moscale_yaml, vq_cfg, source=str(transformer_config))
    vq_model = convert_vq_state_dict(load_original_checkpoint(vq_checkpoint, ("vq_model", "model")), vq_cfg)
    moscale_state = load_original_checkpoint(transformer_checkpoint, ("moscale",))
    transformer = convert_moscale_state_dict(moscale_state, moscale_cfg)
    if output_dir is not None:
        output_dir = Path(output_dir)
        vq_model.save_pretrained(output_dir / "vq_model")
        transformer.save_pretrained(output_dir / "transformer")
    return vq_model, transformer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="moscale convert",
        description=(
            "Convert the authors' MoScale checkpoints (.tar + YAML) into Hugging Face save_pretrained folders: "
            "OUTPUT_DIR/vq_model (MoScaleVQModel) and OUTPUT_DIR/transformer (MoScaleForTextToMotion)."
        ),
    )
    parser.add_argument("--vq_checkpoint", required=True, help="tokenizer .tar (e.g. hrvqvae/model/net_best_fid.tar)")
    parser.add_argument("--vq_config", required=True, help="the tokenizer's train_hrvqvae.yaml")
    parser.add_argument(
        "--transformer_checkpoint", required=True, help="transformer .tar (moscale/model/net_best_fid.tar)"
    )
    parser.add_argument("--transformer_config", required=True, help="the transformer's train_moscale.yaml")
    parser.add_argument("--output_dir", required=True, help="writes OUTPUT_DIR/vq_model and OUTPUT_DIR/transformer")
    args = parser.parse_args(argv)
    try:
        convert_original_checkpoint(
            args.vq_checkpoint, args.vq_config, args.transformer_checkpoint, args.transformer_config, args.output_dir
        )
    except (ConversionError, FileNotFoundError) as error:
        parser.exit(2, f"error: {error}\n")
    print(f"wrote {Path(args.output_dir) / 'vq_model'} and {Path(args.output_dir) / 'transformer'}")


if __name__ == "__main__":
    main()

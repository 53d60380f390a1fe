"""The authors' sampler (`MoScale.generate` from github.com/zhiwei-zzz/MoScale), built next to ours for timing.

Used by `bench_sampling.py --compare_official PATH`, where PATH is a checkout of their repository (nothing of it is
copied here). Their code needs three things this machine lacks, all supplied at run time and never written into
either repository:

* `flash_attn`: a small pure-PyTorch stand-in for the two functions they import (`flash_attn_func`, only used
  outside float32, and `flash_attn_varlen_kvpacked_func`, their text cross-attention), put in `sys.modules`;
* a T5 encoder: their `T5TextEncoder` is replaced by a stub that returns the benchmark's random text features;
* float32 cross-attention: in float32 their `CrossAttention` casts q and kv to bfloat16 before flash-attn. As the
  parity fixtures do (shared/data/parity/README.md, section 3), their helper module sees a `torch` whose
  `bfloat16` is float32, so the float32 path is float32 throughout and the tokens can be compared exactly.

Both models get the same random weights: theirs are built by their constructors, perturbed (their initialisation
zeroes biases and shrinks the AdaLN gammas to 1e-5, which would make sampling degenerate), and converted into ours
by `moscale.models.convert_original_checkpoint`.
"""

from __future__ import annotations

import contextlib
import io
import sys
import types
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from timing import perturb_

from moscale import MoScalePipeline
from moscale.models.convert_original_checkpoint import (
    convert_moscale_state_dict,
    convert_vq_state_dict,
    moscale_config_from_yaml,
    vq_config_from_yaml,
)


# ------------------------------------------------------------------------------------------ flash-attn stand-in
def _flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, **_):
    """(B, L, H, d) layout in and out, as flash-attn's."""
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), scale=softmax_scale, is_causal=causal
    )
    return out.transpose(1, 2)


def _flash_attn_varlen_kvpacked_func(
    q, kv, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0, softmax_scale=None, **_
):
    """Packed variable-length attention: sequence b is q[cu_q[b]:cu_q[b+1]] against kv[cu_k[b]:cu_k[b+1]].

    Their callers always give every sequence the same number of queries, so q reshapes to (B, Lq, H, d); keys are
    gathered into a padded (B, S, 2, H, d) block with a key mask, then one SDPA call.
    """
    batch = cu_seqlens_q.shape[0] - 1
    heads, dim = q.shape[1], q.shape[2]
    q_BHLd = q.view(batch, -1, heads, dim).transpose(1, 2)
    starts, lengths = cu_seqlens_k[:-1].long(), (cu_seqlens_k[1:] - cu_seqlens_k[:-1]).long()
    offsets = torch.arange(max_seqlen_k, device=q.device)
    valid_BS = offsets[None] < lengths[:, None]
    index_BS = torch.where(valid_BS, starts[:, None] + offsets[None], 0)
    kv_BS2Hd = kv[index_BS]
    k_BHSd, v_BHSd = kv_BS2Hd.permute(2, 0, 3, 1, 4).unbind(0)
    out = F.scaled_dot_product_attention(
        q_BHLd, k_BHSd.to(q.dtype), v_BHSd.to(q.dtype), attn_mask=valid_BS[:, None, None, :], scale=softmax_scale
    )
    return out.transpose(1, 2).reshape(-1, heads, dim)


def _flash_attn_module() -> types.ModuleType:
    module = types.ModuleType("flash_attn")
    module.flash_attn_func = _flash_attn_func
    module.flash_attn_varlen_kvpacked_func = _flash_attn_varlen_kvpacked_func
    return module


class _Float32Only:
    """Stands in for the `torch` module inside their transformer_helper.py: `torch.bfloat16` is float32 there."""

    bfloat16 = torch.float32

    def __getattr__(self, name):
        return getattr(torch, name)


class _TextFeatures:
    """Replaces their T5TextEncoder: `get_text_embeddings(keys)` returns the features registered under the keys."""

    table: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def __init__(self, *args, **kwargs):
        pass

    def get_text_embeddings(self, keys):
        states = torch.stack([self.table[key][0] for key in keys])
        mask = torch.stack([self.table[key][1] for key in keys])
        return states, mask


class _AttributeDict(dict):
    """Their configs are dicts read as attributes (their config/load_config.py does the same)."""

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError as error:
            raise AttributeError(key) from error

    def __setattr__(self, key, value):
        self[key] = value


def _attribute_dict(value):
    if isinstance(value, dict):
        return _AttributeDict({k: _attribute_dict(v) for k, v in value.items()})
    return value


@contextlib.contextmanager
def _their_import_path(checkout: Path):
    """Their top-level packages (`model`, `utils`, ...) importable from the checkout, and our flash-attn stand-in."""
    sys.path.insert(0, str(checkout))
    sys.modules.setdefault("flash_attn", _flash_attn_module())
    try:
        yield
    finally:
        sys.path.remove(str(checkout))


# ------------------------------------------------------------------------------------------------------ building
class OfficialSampler:
    """The authors' `MoScale` + `HRVQVAE` from a checkout, and our pipeline holding the same weights.

    Args:
        checkout: path of a clone of github.com/zhiwei-zzz/MoScale.
        moscale_overrides, vq_overrides: changes to their config/train_moscale.yaml and config/train_hrvqvae.yaml,
            section by section, e.g. {"model": {"num_layers": 4}} and {"quantizer": {"code_dim": 64}}.
        seed: seeds the weights and their sampler's random stream.
    """

    def __init__(
        self,
        checkout: str | Path,
        moscale_overrides: dict | None = None,
        vq_overrides: dict | None = None,
        seed: int = 0,
    ):
        checkout = Path(checkout)
        if not (checkout / "model" / "transformer" / "moscale.py").is_file():
            raise FileNotFoundError(
                f"{checkout} is not a checkout of github.com/zhiwei-zzz/MoScale (no model/transformer/moscale.py)"
            )
        moscale_yaml = yaml.safe_load((checkout / "config" / "train_moscale.yaml").read_text())
        vq_yaml = yaml.safe_load((checkout / "config" / "train_hrvqvae.yaml").read_text())
        for config, overrides in ((moscale_yaml, moscale_overrides), (vq_yaml, vq_overrides)):
            for section, values in (overrides or {}).items():
                config.setdefault(section, {}).update(values)
        moscale_yaml["exp"]["device"] = "cpu"
        moscale_yaml["exp"]["seed"] = seed
        self.seed = seed

        with _their_import_path(checkout), contextlib.redirect_stdout(io.StringIO()):
            import model.transformer.moscale as their_moscale
            import model.transformer.transformer_helper as their_helper
            from model.vq.hrvqvae import HRVQVAE

            their_helper.torch = _Float32Only()
            their_moscale.T5TextEncoder = _TextFeatures
            vq_cfg = _attribute_dict(vq_yaml)
            model_cfg = vq_cfg.model
            vq = HRVQVAE(
                vq_cfg, vq_cfg.data.dim_pose, model_cfg.down_t, model_cfg.stride_t, model_cfg.width, model_cfg.depth,
                model_cfg.dilation_growth_rate, model_cfg.vq_act, model_cfg.use_attn, model_cfg.vq_norm,
            )  # fmt: skip
            cfg = _attribute_dict(moscale_yaml)
            cfg.vq = vq_cfg.quantizer
            transformer = their_moscale.MoScale(
                code_dim=cfg.vq.code_dim, latent_dim=cfg.model.latent_dim, num_heads=cfg.model.n_heads,
                dropout=cfg.model.dropout, attn_drop_rate=cfg.model.attn_drop_rate,
                text_dim=cfg.text_embedder.dim_embed, cond_drop_prob=cfg.training.cond_drop_prob, device="cpu",
                cfg=cfg, full_length=cfg.data.max_motion_length // 4, scales=list(vq_cfg.quantizer.scales),
            )  # fmt: skip
        generator = torch.Generator().manual_seed(seed + 1)
        perturb_(vq, generator)
        perturb_(transformer, generator)
        with torch.no_grad():
            vq.quantizer.codebook.copy_(torch.randn(vq.quantizer.codebook.shape, generator=generator))
        self.vq, self.transformer = vq.eval(), transformer.eval()

        our_vq_config = vq_config_from_yaml(vq_yaml, moscale_yaml["data"]["max_motion_length"])
        our_config = moscale_config_from_yaml(moscale_yaml, our_vq_config)
        our_transformer = convert_moscale_state_dict(transformer.state_dict(), our_config)
        our_vq = convert_vq_state_dict(vq.state_dict(), our_vq_config)
        self.pipeline = MoScalePipeline(our_vq, our_transformer, min_num_frames=our_vq_config.unit_length * 8)
        self.pipeline.set_progress_bar_config(disable=True)

    def generate(
        self,
        text_states_BSX: torch.Tensor,
        text_mask_BS: torch.Tensor,
        num_frames: list[int],
        refinement_steps: tuple[int, ...],
        guidance_scale: float,
        top_p: float = 0.9,
        use_cache: bool = True,
    ) -> list[torch.Tensor]:
        """Their `generate()` on text features -> per-scale ids; their random stream restarts from `seed`."""
        keys = [f"text{i}" for i in range(text_states_BSX.shape[0])]
        _TextFeatures.table = {key: (text_states_BSX[i], text_mask_BS[i]) for i, key in enumerate(keys)}
        self.transformer.infer_use_kvcache = use_cache
        self.transformer.rng.manual_seed(self.seed)
        token_lengths = torch.tensor(num_frames) // 4
        with contextlib.redirect_stdout(io.StringIO()):
            return self.transformer.generate(
                keys, token_lengths, guidance_scale, temperature=1, top_p_thres=top_p, vq_model=self.vq,
                sample_time=list(refinement_steps),
            )  # fmt: skip

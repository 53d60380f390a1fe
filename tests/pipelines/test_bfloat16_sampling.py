"""Sampling with the transformer in bfloat16 (the fast CPU mode of docs/performance.md) stays close to float32.

The bundled pipeline (trained weights: random ones say nothing about rounding) samples the same prompts and random
stream twice, float32 and with `pipe.transformer.to(torch.bfloat16)`. Sampling is chaotic, one different draw changes
everything after it, so agreement falls from scale to scale; the semantic effect over hundreds of samples is measured
by `benchmarks/bf16_quality.py`.
"""

import torch

from moscale import MoScalePipeline
from moscale.pretrained import bundled_pipeline_path

PROMPTS = [
    "a person jumps twice",
    "someone squats three times",
    "a woman turns to the right",
    "a person walks backward 3 steps",
    "a person squats twice, then turns left",
    "a man waves his left hand",
    "a person runs forward",
    "someone side steps to the left",
]
# Measured on the bundled model (4 samples per prompt, seed 0, S=4): 0.96 / 0.93 / 0.87 / 0.79 of the tokens per
# scale (the fourth build: 1.00 / 0.99 / 0.95 / 0.91; the third 0.96 / 0.90 / 0.85 / 0.74; the second 0.96 / 0.91 /
# 0.83 / 0.71; the first, with a less-trained tokenizer, 0.99 / 0.98 / 0.93 / 0.87).
MIN_AGREEMENT_PER_SCALE = (0.9, 0.85, 0.75, 0.65)
MAX_RELATIVE_LOGIT_ERROR = 0.02


def sample(pipe: MoScalePipeline):
    logits = []
    out = pipe(
        PROMPTS,
        num_motions_per_prompt=4,
        num_frames=120,
        refinement_steps=(1, 1, 1, 1),
        generator=torch.Generator().manual_seed(0),
        output_type="latent",
        callback_on_step_end=lambda _, step, scale, outputs: logits.append(outputs["logits"].float().clone()),
    )
    return out.tokens, logits[0]


def test_bfloat16_transformer_samples_nearly_the_float32_tokens():
    pipe = MoScalePipeline.from_pretrained(bundled_pipeline_path())
    pipe.set_progress_bar_config(disable=True)
    tokens, logits = sample(pipe)
    pipe.transformer.to(torch.bfloat16)
    low_tokens, low_logits = sample(pipe)

    assert low_logits.dtype == torch.float32 and pipe.vq_model.dtype == torch.float32
    error = (low_logits - logits).abs().mean() / logits.std()
    assert 0 < error < MAX_RELATIVE_LOGIT_ERROR, float(error)
    for scale, (ours, reference, least) in enumerate(zip(low_tokens, tokens, MIN_AGREEMENT_PER_SCALE)):
        valid = reference >= 0
        assert torch.equal(ours >= 0, valid)
        agreement = float(((ours == reference) & valid).sum() / valid.sum())
        assert agreement >= least, (scale, agreement)

"""The sampler's tensor functions: top-k / top-p filtering, one draw over all positions, the re-masking schedule
and the guidance ramp."""

import math

import torch

from moscale.schedulers.scheduling_moscale import cfg_weight, num_tokens_to_mask, sample_tokens, top_k_top_p_filter


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_top_p_drops_the_token_that_crosses_the_threshold():
    logits = torch.log(torch.tensor([[[0.5, 0.3, 0.15, 0.05]]]))
    kept = torch.isfinite(top_k_top_p_filter(logits, top_p=0.7))[0, 0]
    # Inclusive cumulative mass 0.5, 0.8, ...: the second token crosses 0.7 and is removed (HF would keep it).
    assert kept.tolist() == [True, False, False, False]
    kept = torch.isfinite(top_k_top_p_filter(logits, top_p=0.85))[0, 0]
    assert kept.tolist() == [True, True, False, False]
    assert torch.isfinite(top_k_top_p_filter(logits, top_p=1.0)).all()


def test_top_k_then_top_p():
    logits = torch.tensor([[[0.0, 3.0, 1.0, 2.0]]])
    assert torch.isfinite(top_k_top_p_filter(logits, top_k=2))[0, 0].tolist() == [False, True, False, True]
    # top-p renormalises over the top-k survivors: p = (0.73, 0.27), so 0.5 keeps only the best.
    assert torch.isfinite(top_k_top_p_filter(logits, top_k=2, top_p=0.5))[0, 0].tolist() == [False, True, False, False]


def test_sample_tokens_is_one_draw_over_all_positions(monkeypatch):
    calls = []
    real = torch.multinomial

    def spy(probs, *args, **kwargs):
        calls.append(tuple(probs.shape))
        return real(probs, *args, **kwargs)

    monkeypatch.setattr(torch, "multinomial", spy)
    logits = torch.randn(3, 5, 7, generator=gen())
    a = sample_tokens(logits, top_p=0.9, generator=gen(1))
    b = sample_tokens(logits, top_p=0.9, generator=gen(1))
    assert calls == [(15, 7), (15, 7)] and a.shape == (3, 5) and torch.equal(a, b)
    # The draw respects the filter: only tokens inside the nucleus can come out.
    allowed = torch.isfinite(top_k_top_p_filter(logits, top_p=0.9))
    assert allowed.gather(-1, a[..., None]).all()


def test_schedule_and_guidance_ramp():
    pool = torch.tensor([6.0, 49.0])
    assert num_tokens_to_mask(torch.tensor(0.0), pool).tolist() == [6, 49]
    assert num_tokens_to_mask(torch.tensor(1.0), pool).tolist() == [1, 1]
    assert num_tokens_to_mask(torch.tensor(0.5), pool).tolist() == [round(6 * math.cos(math.pi / 4)), 35]
    assert [cfg_weight(5.0, k) for k in range(4)] == [5.25, 5.0, 4.75, 4.5]

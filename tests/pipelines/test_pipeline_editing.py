"""Editing, completion and long motions through the one mask API, measured on a real HumanML3D clip.

The models are tiny and random, so what they generate is not a meaningful motion; the decoder's output layer is
rescaled so that decoded features have the data's spread (std 0.3 in normalised units), which puts generated joints
in metres and makes joint distances and frame-to-frame steps comparable with the real clip's.
"""

import numpy as np
import pytest
import torch

from moscale.motion.representation import recover_from_ric
from moscale.schedulers.scheduling_moscale import edit_token_masks, seam_blend_weights
from tests.helpers import calm_pipeline
from tests.shared_data import SHARED_DATA as DATA

CLIP = DATA / "humanml3d_sample" / "new_joint_vecs" / "012314.npy"
FPS = 20


@pytest.fixture(scope="module")
def pipe():
    return calm_pipeline()


@pytest.fixture(scope="module")
def source():
    """The real clip, 168 frames (8.4 s)."""
    return torch.from_numpy(np.load(CLIP))[:168]


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def frame_steps(joints_NJ3: torch.Tensor) -> torch.Tensor:
    """(N-1,) mean joint displacement between consecutive frames."""
    return (joints_NJ3[1:] - joints_NJ3[:-1]).norm(dim=-1).mean(dim=-1)


def local_joints(features_ND: torch.Tensor) -> torch.Tensor:
    """Joints in the body's heading frame (root-relative x/z, absolute y): the pose without the global path."""
    root_height = features_ND[:, 3:4]
    root = torch.cat([torch.zeros_like(root_height), root_height, torch.zeros_like(root_height)], dim=-1)
    return torch.cat([root[:, None], features_ND[:, 4:67].reshape(-1, 21, 3)], dim=1)


def mean_joint_error(a_NJ3: torch.Tensor, b_NJ3: torch.Tensor) -> torch.Tensor:
    return (a_NJ3 - b_NJ3).norm(dim=-1).mean()


# ---------------------------------------------------------------------------------------------- mask helpers
def test_frame_mask_reaches_every_scale_and_coarse_tokens_cover_the_edit():
    regenerate = torch.zeros(1, 196, dtype=torch.bool)
    regenerate[0, 60:100] = True  # latent steps 15..24
    masks = edit_token_masks(regenerate, unit_length=4, latent_length=49, scales=(8, 4, 2, 1))
    assert [m.shape[-1] for m in masks] == [6, 12, 24, 49]
    assert masks[3][0].nonzero().flatten().tolist() == list(range(15, 25))
    assert masks[2][0].nonzero().flatten().tolist() == list(range(7, 13))
    # Any token whose area window touches an edited step is regenerated: coarse scales grow past the edit.
    assert masks[1][0].nonzero().flatten().tolist() == list(range(3, 7))
    assert masks[0][0].tolist() == [False, True, True, True, False, False]


def test_seam_weights_ramp_over_kept_frames_only():
    regenerate = torch.zeros(1, 30, dtype=torch.bool)
    regenerate[0, 10:20] = True
    w = seam_blend_weights(regenerate, seam_frames=4)[0]
    assert (w[10:20] == 0).all() and (w[:5] == 1).all() and (w[25:] == 1).all()
    assert torch.allclose(w[5:10], torch.tensor([5, 4, 3, 2, 1]) / 5.0)
    assert torch.allclose(w[20:25], torch.tensor([1, 2, 3, 4, 5]) / 5.0)


# ---------------------------------------------------------------------------------------------- in-betweening
def test_inbetweening_keeps_far_frames_changes_the_edit_and_has_no_seam_jump(pipe, source):
    start, stop = 3.0, 5.0  # seconds: frames 60..99 are regenerated
    out = pipe("a person spins", num_frames=168, source_motion=source, edit_spans=[(start, stop)], generator=gen())
    features, joints = out.features[0], out.joints[0]
    source_joints = recover_from_ric(source, 22)
    half_second = FPS // 2
    a, b = round(start * FPS), round(stop * FPS)

    # Kept frames more than half a second before the edit: global joints within 1 cm (they are the source's).
    before = slice(0, a - half_second)
    assert mean_joint_error(joints[before], source_joints[before]) < 0.01
    # After the edit the global path moves with the edit; the pose in the body's frame is the source's.
    after = slice(b + half_second, 168)
    assert mean_joint_error(local_joints(features[after]), local_joints(source[after])) < 0.01

    # Edited frames change.
    assert mean_joint_error(local_joints(features[a:b]), local_joints(source[a:b])) > 0.05

    # No jump across either seam larger than the motion's own frame-to-frame steps away from the seams.
    steps = frame_steps(joints)
    seam_zone = torch.zeros_like(steps, dtype=torch.bool)
    for edge in (a, b):
        seam_zone[edge - half_second - 1 : edge + half_second + 1] = True
    own = torch.maximum(steps[~seam_zone].max(), frame_steps(source_joints).max())
    assert steps[seam_zone].max() <= own


def test_without_seam_blending_the_jump_is_visible(pipe, source):
    """The measurement has teeth: pasting the source with no blend leaves a jump bigger than any own step."""
    out = pipe(
        "a person spins", num_frames=168, source_motion=source, edit_spans=[(3.0, 5.0)], seam_frames=0, generator=gen()
    )
    steps = frame_steps(out.joints[0])
    seam_steps = torch.stack([steps[59], steps[99]])  # 59 -> 60 and 99 -> 100
    away = torch.ones_like(steps, dtype=torch.bool)
    away[[59, 99]] = False
    assert seam_steps.max() > max(steps[away].max(), frame_steps(recover_from_ric(source, 22)).max())


def test_kept_tokens_are_the_sources_codes_away_from_the_edit(pipe, source):
    out = pipe("a person spins", num_frames=168, source_motion=source, edit_spans=[(6.0, 8.4)], generator=gen())
    codes = pipe.vq_model.encode(
        torch.nn.functional.pad(pipe.normalize(source), (0, 0, 0, 28))[None], torch.tensor([168])
    ).codes
    masks = edit_token_masks(torch.arange(168)[None] >= 120, 4, 49, (8, 4, 2, 1))
    for k, scale in enumerate((8, 4, 2, 1)):
        # A token is untouched when no regenerated coarser token's linear upsampling reaches its window.
        reach = 2 * 8  # latent steps a scale-8 token's interpolation spans on either side
        first_edit_step = 120 // 4
        untouched = (torch.arange(49 // scale) + 1) * scale <= first_edit_step - reach
        assert untouched.any()
        assert torch.equal(out.tokens[k][0, untouched], codes[k][0, untouched]), f"scale {k}"
    # The finest scale's regenerated tokens were sampled, not copied.
    valid = torch.arange(49) < 42
    assert not torch.equal(out.tokens[3][0, masks[3][0] & valid], codes[3][0, masks[3][0] & valid])


# ---------------------------------------------------------------------------------------- completion variants
def test_continuation_to_a_longer_target(pipe, source):
    prefix = source[:120]
    out = pipe("then jumps", num_frames=196, source_motion=prefix, generator=gen())
    assert out.lengths.tolist() == [196] and out.features.shape == (1, 196, 263)
    keep = slice(0, 120 - FPS // 2)
    assert mean_joint_error(out.joints[0, keep], recover_from_ric(prefix, 22)[keep]) < 1e-4
    assert out.features[0, 120:].abs().sum(-1).gt(0).all()


def test_prefix_generation_with_source_start(pipe, source):
    clip = source[:120]
    out = pipe("first crouches", num_frames=160, source_motion=clip, source_start=40, generator=gen())
    keep = slice(40 + FPS // 2, 160)
    assert torch.allclose(out.features[0, keep], clip[keep.start - 40 :], atol=1e-5)
    assert mean_joint_error(local_joints(out.features[0, :40]), local_joints(clip[:40])) > 0.05


def test_new_prompt_keeping_chosen_spans_with_a_mask(pipe, source):
    regenerate = np.ones(168, dtype=bool)
    regenerate[:40] = regenerate[128:] = False
    out = pipe("a person dances", num_frames=168, source_motion=source, edit_mask=regenerate, generator=gen())
    assert torch.allclose(out.features[0, :30], source[:30], atol=1e-5)
    assert torch.allclose(local_joints(out.features[0, 138:]), local_joints(source[138:]), atol=1e-5)


def test_batched_edit_with_per_prompt_masks(pipe, source):
    masks = np.zeros((2, 168), dtype=bool)
    masks[0, 40:80] = True
    masks[1, 100:140] = True
    out = pipe(["a", "b"], num_frames=168, source_motion=source, edit_mask=masks, generator=gen())
    assert torch.allclose(out.features[0, 100:], source[100:], atol=1e-5)
    assert torch.allclose(out.features[1, :80], source[:80], atol=1e-5)


def test_several_motions_per_prompt_share_the_source(pipe, source):
    out = pipe(
        ["a", "b"],
        num_frames=168,
        source_motion=source,
        edit_spans=[(3.0, 5.0)],
        num_motions_per_prompt=2,
        generator=gen(),
    )
    assert out.features.shape[0] == 4
    assert torch.allclose(out.features[:, :50], source[None, :50].expand(4, -1, -1), atol=1e-5)
    assert not torch.equal(out.features[0, 60:100], out.features[1, 60:100])


# ------------------------------------------------------------------------------------------------ bad inputs
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"edit_mask": np.ones(100, dtype=bool)}, "one entry per target frame"),
        ({"edit_mask": np.ones((3, 168), dtype=bool)}, "one entry per target frame"),
        ({"edit_spans": [(5.0, 3.0)]}, "edit span"),
        ({"edit_spans": [(1.0, 20.0)]}, "edit span"),
        ({"edit_spans": [(1.0, 2.0)], "edit_mask": np.ones(168, dtype=bool)}, "not both"),
        ({"edit_mask": np.zeros(168, dtype=bool)}, "regenerates no frame"),
        ({"num_frames": 196, "edit_spans": [(1.0, 2.0)]}, "does not cover"),
        ({"source_start": -4}, "source_start"),
    ],
)
def test_bad_edit_inputs(pipe, source, kwargs, message):
    call = {"num_frames": 168, "source_motion": source, **kwargs}
    with pytest.raises(ValueError, match=message):
        pipe("a person waves", **call)


def test_an_edit_mask_of_other_numbers_than_0_and_1_is_refused(pipe, source):
    mask = np.zeros(168)
    mask[60:100] = 0.3
    with pytest.raises(ValueError) as raised:
        pipe("a person waves", num_frames=168, source_motion=source, edit_mask=mask)
    assert str(raised.value) == (
        "edit_mask must be booleans (True = regenerate the frame) or 0/1 values, got torch.float64 values such as "
        "[0.3]; threshold it yourself, e.g. edit_mask > 0.5"
    )
    mask[60:100] = 1.0
    as_numbers = pipe("a person waves", num_frames=168, source_motion=source, edit_mask=mask, generator=gen())
    as_booleans = pipe("a person waves", num_frames=168, source_motion=source, edit_mask=mask > 0, generator=gen())
    assert torch.equal(as_numbers.features, as_booleans.features)


def test_one_flat_edit_span_gets_the_expected_form(pipe, source):
    with pytest.raises(ValueError) as raised:
        pipe("a person waves", num_frames=168, source_motion=source, edit_spans=(3.0, 5.0))
    assert str(raised.value) == (
        "edit_spans must be a list of (start_seconds, end_seconds or None) pairs, e.g. [(1.0, 2.5)] for one span, "
        "got (3.0, 5.0)"
    )


def test_bad_source_motion(pipe, source):
    with pytest.raises(ValueError, match="features"):
        pipe("a person waves", num_frames=168, source_motion=source[:, :100], edit_spans=[(1.0, 2.0)])
    with pytest.raises(ValueError, match="pass num_frames explicitly"):
        pipe("a person waves", source_motion=torch.from_numpy(np.load(CLIP)), edit_spans=[(1.0, 2.0)])
    bad = source.clone()
    bad[3, 5] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        pipe("a person waves", num_frames=168, source_motion=bad, edit_spans=[(1.0, 2.0)])


# ------------------------------------------------------------------------------------------------ long motions
def test_long_motion_by_chained_continuation(pipe):
    prompts = ["walks forward", "turns around", "sits down", "stands up", "waves"]
    segments = [196, 120, 120, 120, 104]  # 660 frames = 33 s
    out = pipe.generate_long(prompts, num_frames=segments, overlap_frames=40, generator=gen(7))
    total = sum(segments)
    assert out.lengths.tolist() == [total] and out.features.shape == (1, total, 263)
    assert out.joints.shape == (1, total, 22, 3) and torch.isfinite(out.joints).all()
    # Junctions: segment i starts at frame sum(segments[:i]); no step there beats the motion's own steps elsewhere.
    steps = frame_steps(out.joints[0])
    junctions = np.cumsum(segments)[:-1]
    near = torch.zeros_like(steps, dtype=torch.bool)
    for j in junctions:
        near[j - 40 : j + FPS // 2 + 1] = True
    assert steps[near].max() <= steps[~near].max()


def test_long_motion_is_reproducible_and_validated(pipe):
    a = pipe.generate_long(["a", "b"], num_frames=[80, 80], generator=gen(1))
    b = pipe.generate_long(["a", "b"], num_frames=[80, 80], generator=gen(1))
    assert torch.equal(a.features, b.features)
    with pytest.raises(ValueError, match="overlap_frames \\+ frames"):
        pipe.generate_long(["a", "b"], num_frames=[80, 180], overlap_frames=40)
    with pytest.raises(ValueError, match="2 segments"):
        pipe.generate_long(["a", "b"], num_frames=[80, 80, 80])
    with pytest.raises(ValueError, match="sets source_motion itself"):
        pipe.generate_long(["a", "b"], num_frames=80, source_motion=torch.zeros(40, 263))


# ------------------------------------------------------------------------------------------------ measurement
def measure_inbetweening() -> None:
    """Print the seam and spill numbers quoted in docs/pipeline.md: `python -m tests.pipelines.test_pipeline_editing`."""
    torch.set_num_threads(1)
    pipe = calm_pipeline()
    source = torch.from_numpy(np.load(CLIP))[:168]
    source_joints = recover_from_ric(source, 22)
    a, b = 60, 100  # regenerate 3.0 s .. 5.0 s
    half_second = FPS // 2
    for seam in (half_second, 0):
        out = pipe(
            "a person spins",
            num_frames=168,
            source_motion=source,
            edit_spans=[(3.0, 5.0)],
            seam_frames=seam,
            generator=gen(),
        )
        features, joints = out.features[0], out.joints[0]
        before = mean_joint_error(joints[: a - half_second], source_joints[: a - half_second])
        after = mean_joint_error(local_joints(features[b + half_second :]), local_joints(source[b + half_second :]))
        edited = mean_joint_error(local_joints(features[a:b]), local_joints(source[a:b]))
        steps = frame_steps(joints)
        zone = torch.zeros_like(steps, dtype=torch.bool)
        for edge in (a, b):
            zone[edge - half_second - 1 : edge + half_second + 1] = True
        print(
            f"seam_frames={seam:2d}: kept frames > 0.5 s from the edit: {before * 100:.3f} cm (global, before), "
            f"{after * 100:.3f} cm (body frame, after); edited frames moved {edited * 100:.1f} cm; largest step "
            f"across the seams {steps[zone].max() * 100:.1f} cm vs {steps[~zone].max() * 100:.1f} cm elsewhere "
            f"(source's largest {frame_steps(source_joints).max() * 100:.1f} cm)"
        )
    lengths = torch.tensor([168])
    padded = torch.nn.functional.pad(pipe.normalize(source), (0, 0, 0, 28))[None]
    source_codes = pipe.vq_model.encode(padded, lengths).codes
    moved = (pipe.vq_model.codes_to_f_hat(out.tokens) - pipe.vq_model.codes_to_f_hat(source_codes))[0].norm(dim=0)[:42]
    changed = (moved > 1e-6).nonzero().flatten()
    print(
        f"token spill: f_hat changed at latent steps {int(changed.min())}..{int(changed.max())} "
        f"(frames {4 * int(changed.min())}..{4 * int(changed.max()) + 3}) "
        f"for an edit of latent steps {a // 4}..{(b - 1) // 4}"
    )
    raw = pipe.decode_tokens(out.tokens, lengths)[0]
    reconstruction = pipe.decode_tokens(source_codes, lengths)[0]
    deviation = (local_joints(raw) - local_joints(reconstruction)).norm(dim=-1).mean(-1)
    print(
        f"decoded without pasting, kept frames 1 s from the edit differ from the source's reconstruction by "
        f"{deviation[a - 2 * half_second] * 100:.1f} cm (before) and "
        f"{deviation[b - 1 + 2 * half_second] * 100:.1f} cm (after)"
    )


if __name__ == "__main__":
    measure_inbetweening()

"""The bundled pipeline: it ships inside the package, loads offline, and does what a few texts say.

The figures per category over hundreds of samples come from `python -m moscale.evaluation.prompt_following`
(in the model card); this test checks a handful of prompts with fixed seeds in CI time.
"""

import torch

from moscale import MoScalePipeline
from moscale.evaluation.prompt_following import PLAUSIBILITY_LIMITS, agrees, motion_plausibility
from moscale.evaluation.semantic_accuracy import detect_actions
from moscale.pretrained import BUNDLED_PIPELINE_DIR, bundled_pipeline_path

# (prompt, judged category, asked actions, fewest agreeing samples of SAMPLES with the seed below): captions of the
# kind the model was trained on, and a phrasing that no training caption uses ("spins"). Measured: 4 of 4 for every
# prompt, the order prompt included (at the length estimator's 88 frames). Waving, counts above one in general and
# unseen words such as "crouches" are measured by the prompt-following command and reported in the model card, not
# asserted here.
PROMPTS = [
    ("a person jumps twice", "jump_count_2", [{"name": "jump", "count": 2}], 3),
    ("someone squats three times", "squat_count_3", [{"name": "squat", "count": 3}], 3),
    ("a woman turns to the right", "turn_direction", [{"name": "turn", "direction": "right"}], 3),
    ("a person walks backward 3 steps", "travel_direction", [{"name": "walk", "direction": "backward"}], 3),
    (
        "a person squats twice, then turns left",
        "order_2",
        [{"name": "squat"}, {"name": "turn", "direction": "left"}],
        3,
    ),
    ("a person spins to the left", "turn_direction", [{"name": "turn", "direction": "left"}], 3),
]
SAMPLES = 4
MIN_TOTAL = 22  # measured: 24 of 24
MIN_BONE_LENGTHS_OK = 21  # measured: 24 of 24
MAX_SLIDING = 2  # measured: 0 of 24 (the previous build 1, 2.7 cm on "spins to the left"; the limit is 2.5 cm)


def test_bundled_folder_is_complete_and_under_25_mb():
    folder = bundled_pipeline_path()
    assert folder == BUNDLED_PIPELINE_DIR
    files = [path for path in folder.rglob("*") if path.is_file()]
    assert sum(path.stat().st_size for path in files) <= 25 * 2**20
    for component in ("vq_model", "transformer", "length_estimator", "scheduler"):
        assert (folder / component).is_dir(), component
    assert (folder / "README.md").read_text().startswith("---")  # the model card, with its metadata


def test_bundled_model_follows_the_text():
    pipe = MoScalePipeline.from_pretrained(bundled_pipeline_path())
    pipe.set_progress_bar_config(disable=True)
    out = pipe(
        [prompt for prompt, _, _, _ in PROMPTS],
        num_motions_per_prompt=SAMPLES,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    )
    agreed, bones_ok, sliding = {}, 0, 0
    for index, (prompt, category, actions, _) in enumerate(PROMPTS):
        for sample in range(SAMPLES):
            row = index * SAMPLES + sample
            joints = out.joints[row, : int(out.lengths[row])]
            agreed[prompt] = agreed.get(prompt, 0) + agrees(category, actions, detect_actions(joints, fps=pipe.fps))
            figures = motion_plausibility(joints, pipe.fps)
            bones_ok += figures["bone_length_error_m"] <= PLAUSIBILITY_LIMITS["bone_length_error_m"]
            sliding += figures["foot_slide_m"] > PLAUSIBILITY_LIMITS["foot_slide_m"]
            for name in ("lowest_joint_below_floor_m", "max_joint_step_m"):
                assert figures[name] <= PLAUSIBILITY_LIMITS[name], (prompt, figures)
    assert sum(agreed.values()) >= MIN_TOTAL, agreed
    # Bone lengths drift by more than 5 cm in about 20 % of all samples (the model card's figure); here in none.
    assert bones_ok >= MIN_BONE_LENGTHS_OK, bones_ok
    assert sliding <= MAX_SLIDING, sliding
    assert all(agreed[prompt] >= fewest for prompt, _, _, fewest in PROMPTS), agreed

"""The bundled pipeline: it ships inside the package, loads offline, and does what a few texts say.

The figures per category over hundreds of samples come from `python -m moscale.evaluation.prompt_following`
(in the model card); this test checks a handful of prompts with fixed seeds in CI time.
"""

import torch

from moscale import MoScalePipeline
from moscale.evaluation.prompt_following import PLAUSIBILITY_LIMITS, agrees, motion_plausibility
from moscale.evaluation.semantic_accuracy import detect_actions
from moscale.pretrained import BUNDLED_PIPELINE_DIR, bundled_pipeline_path

# (prompt, judged category, asked actions): captions of the kind the model was trained on, and a phrasing that no
# training caption uses ("spins"). Waving and unseen words such as "crouches" fail today (see the model card); they
# are measured by the prompt-following command, not asserted here.
PROMPTS = [
    ("a person jumps twice", "jump_count_2", [{"name": "jump", "count": 2}]),
    ("someone squats three times", "squat_count_3", [{"name": "squat", "count": 3}]),
    ("a woman turns to the right", "turn_direction", [{"name": "turn", "direction": "right"}]),
    ("a person walks backward 3 steps", "travel_direction", [{"name": "walk", "direction": "backward"}]),
    ("a person squats twice, then turns left", "order_2", [{"name": "squat"}, {"name": "turn", "direction": "left"}]),
    ("a person spins to the left", "turn_direction", [{"name": "turn", "direction": "left"}]),
]
SAMPLES = 4
MIN_PER_PROMPT = 2  # of SAMPLES, with the seed below; measured: at least 3 each, 21 of 24 in all
MIN_TOTAL = 20


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
        [prompt for prompt, _, _ in PROMPTS],
        num_motions_per_prompt=SAMPLES,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    )
    agreed = {}
    for index, (prompt, category, actions) in enumerate(PROMPTS):
        for sample in range(SAMPLES):
            row = index * SAMPLES + sample
            joints = out.joints[row, : int(out.lengths[row])]
            agreed[prompt] = agreed.get(prompt, 0) + agrees(category, actions, detect_actions(joints, fps=pipe.fps))
            figures = motion_plausibility(joints, pipe.fps)
            assert all(figures[name] <= limit for name, limit in PLAUSIBILITY_LIMITS.items()), (prompt, figures)
    assert sum(agreed.values()) >= MIN_TOTAL, agreed
    assert min(agreed.values()) >= MIN_PER_PROMPT, agreed

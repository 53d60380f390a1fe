"""The web demo's work without a browser: input checks, files, editing, the missing-model message, the Space files.

tests/test_demo_browser.py drives the same page in Chromium.
"""

import configparser
import importlib.util
import subprocess
import sys
from pathlib import Path

import gradio as gr
import imageio.v2 as imageio
import numpy as np
import pytest
import torch
from packaging.specifiers import SpecifierSet

import moscale.pretrained
from moscale.demo import MAX_PROMPTS, Motion, MotionDemo, build_demo, load_pipeline
from moscale.models.modeling_length_estimator import MoScaleLengthEstimator, MoScaleLengthEstimatorConfig
from moscale.motion.bvh import read_bvh
from moscale.motion.retarget import load_bvh_joints
from tests.helpers import tiny_pipeline

ROOT = Path(__file__).resolve().parents[1]
FPS = 20


class RecordedProgress:
    """Stands in for `gr.Progress`: keeps every fraction the demo reports."""

    def __init__(self):
        self.fractions = []

    def __call__(self, fraction, desc=None):
        self.fractions.append(fraction)


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline()


@pytest.fixture(scope="module")
def work(pipe):
    return MotionDemo(pipe, None, "cpu")


def generate(work, prompts="a person walks", seconds=3.0, seed=0, steps="1, 2, 5, 10", motions=(), from_text=False):
    return work.generate(prompts, seconds, from_text, seed, 5.0, steps, list(motions), progress=RecordedProgress())


def edit(work, motions, choice=None, upload=None, prompt="a person jumps", start=1.0, end=2.0):
    choice = motions[-1].label if choice is None and motions else choice
    return work.edit(choice, upload, prompt, start, end, 0, 5.0, "1, 2, 5, 10", motions, progress=RecordedProgress())


# -------------------------------------------------------------------------------------------------- generate
def test_generate_writes_what_the_pipeline_samples_and_reports_progress(work, pipe):
    prompts = ["a person jumps twice", "a person waves with the left hand"]
    progress = RecordedProgress()
    animation, files, motions, choices, summary = work.generate(
        "\n".join(prompts) + "\n\n", 2.4, False, 7, 5.0, "1,2,5,10", [], progress=progress
    )
    # Progress climbs to 1 over the 18 refinement steps, then the page is told rendering started.
    assert progress.fractions[:-1] == pytest.approx([(step + 1) / 18 for step in range(18)])
    assert progress.fractions[-1] is None

    expected = pipe(prompts, num_frames=48, generator=torch.Generator().manual_seed(7), output_type="np")
    names = [Path(path).name for path in files]
    assert names == [
        f"{stem}{suffix}"
        for stem in ("00_a_person_jumps_twice", "01_a_person_waves_with_the_left_hand")
        for suffix in (".bvh", "_joints.npy", "_features.npy")
    ]
    np.testing.assert_array_equal(np.load(files[2]), expected.features[0, :48])
    np.testing.assert_array_equal(np.load(files[4]), expected.joints[1, :48])
    bvh = read_bvh(files[3])
    assert bvh.num_frames == 48 and bvh.fps == FPS and len(bvh.names) == 22
    # A random model's bones change length from frame to frame, which a BVH skeleton cannot; its root path can.
    np.testing.assert_allclose(load_bvh_joints(bvh, scale=1.0)[:, 0], expected.joints[1, :48, 0], atol=1e-4)

    # One animation, a panel per prompt, every other frame drawn.
    assert len(imageio.mimread(animation)) == 24
    assert [motion.label for motion in motions] == [f"1. {prompts[0]} (2.4 s)", f"2. {prompts[1]} (2.4 s)"]
    np.testing.assert_array_equal(motions[1].features, expected.features[1, :48])
    assert choices.choices == [(m.label, m.label) for m in motions] and choices.value == motions[-1].label
    assert "2.4 s, 2.4 s" in summary


def test_length_from_the_text_uses_the_pipelines_estimator(pipe):
    torch.manual_seed(0)
    estimator = MoScaleLengthEstimator(MoScaleLengthEstimatorConfig(text_dim=32, hidden_size=16)).eval()
    with_estimator = tiny_pipeline(length_estimator=estimator)
    work = MotionDemo(with_estimator, None, "cpu")
    assert work.has_length_estimator and not MotionDemo(pipe, None, "cpu").has_length_estimator
    prompt = "a person runs in a circle"
    expected = with_estimator(prompt, generator=torch.Generator().manual_seed(0), output_type="np").lengths[0]
    assert expected != 60  # the slider's 3 s below must be ignored
    _, files, *_ = generate(work, prompt, seconds=3.0, from_text=True)
    assert len(np.load(files[2])) == expected


@pytest.mark.parametrize(
    "prompts, seconds, seed, steps, message",
    [
        ("", 3.0, 0, "1,2,5,10", "Type a prompt first"),
        ("  \n \n", 3.0, 0, "1,2,5,10", "Type a prompt first"),
        ("\n".join(["a person walks"] * (MAX_PROMPTS + 1)), 3.0, 0, "1,2,5,10", f"at most {MAX_PROMPTS} motions"),
        ("a person walks", 1.0, 0, "1,2,5,10", "A length of 1.0 s is out of range: this model makes motions of 2 to 9.8 s"),
        ("a person walks", 12, 0, "1,2,5,10", "A length of 12 s is out of range"),
        ("a person walks", None, 0, "1,2,5,10", "A length of None s is out of range"),
        ("a person walks", 3.0, -1, "1,2,5,10", "The seed must be a whole number"),
        ("a person walks", 3.0, 0, "1, 2", "give 4 whole numbers >= 1"),
        ("a person walks", 3.0, 0, "1, 2, five, 10", "give 4 whole numbers >= 1"),
        ("a person walks", 3.0, 0, "1, 2, 0, 10", "give 4 whole numbers >= 1"),
    ],
)  # fmt: skip
def test_bad_input_is_a_message(work, prompts, seconds, seed, steps, message):
    with pytest.raises(gr.Error, match=message.replace("(", r"\(")):
        generate(work, prompts, seconds=seconds, seed=seed, steps=steps)


# ------------------------------------------------------------------------------------------------------ edit
def test_edit_regenerates_the_span_and_keeps_the_rest(work):
    _, _, motions, _, _ = generate(work, "a person walks", seconds=4.0)
    source = motions[0].features
    animation, files, motions, choices, summary = edit(work, motions, start=1.0, end=2.0)
    result = np.load(files[2])
    assert result.shape == source.shape == (80, 263)
    # Frames a seam (half a second) away from the regenerated span are the source's; the span is new.
    np.testing.assert_array_equal(result[:10], source[:10])
    np.testing.assert_array_equal(result[50:], source[50:])
    assert np.abs(result[20:40] - source[20:40]).max() > 1e-3
    assert len(imageio.mimread(animation)) == 40  # source and result side by side, one frame in two
    assert motions[-1].label == "2. edited: a person jumps (4 s)" and choices.value == motions[-1].label
    assert summary == "Regenerated 1 s to 2 s of a 4 s motion."


def test_edit_sources_can_be_uploaded_as_bvh_or_npy(work, tmp_path):
    _, files, motions, _, _ = generate(work, "a person walks", seconds=2.4)
    # BVH -> features loses one frame (velocities): the source is cut to whole tokens, which the page says.
    with pytest.warns(UserWarning, match="cut to its first 2.2 s"):
        _, edited, *_ = edit(work, motions, upload=files[0])
    assert np.load(edited[2]).shape == (44, 263)
    _, edited, *_ = edit(work, [], upload=files[2])  # features
    assert np.load(edited[2]).shape == (48, 263)
    with pytest.warns(UserWarning, match="cut to its first 2.2 s"):
        _, edited, *_ = edit(work, [], upload=files[1])  # joints
    assert np.load(edited[2]).shape == (44, 263)
    np.save(tmp_path / "wrong.npy", np.zeros((80, 12)))
    with pytest.raises(gr.Error, match=r"Upload a .npy file of features \(frames, 263\) or joints"):
        edit(work, [], upload=str(tmp_path / "wrong.npy"))
    (tmp_path / "broken.bvh").write_text("HIERARCHY\nROOT Hips\n{\n")
    with pytest.raises(gr.Error, match="Could not read broken.bvh"):
        edit(work, [], upload=str(tmp_path / "broken.bvh"))


def test_bad_edits_are_messages(work):
    with pytest.raises(gr.Error, match="Choose a motion to edit"):
        edit(work, [])
    short = [Motion("1. short", np.zeros((30, 263), dtype=np.float32))]
    with pytest.raises(gr.Error, match="The source is 1.5 s long; editing needs at least 2 s"):
        edit(work, short)
    _, _, motions, _, _ = generate(work, "a person walks", seconds=3.0)
    with pytest.raises(gr.Error, match=r"edit span \(2.0, 4.0\) must satisfy 0 <= start < end <= 3 s"):
        edit(work, motions, start=2.0, end=4.0)
    with pytest.raises(gr.Error, match="Type a prompt first"):
        edit(work, motions, prompt=" ")


# ---------------------------------------------------------------------------------------- model and package
def test_a_missing_bundled_model_is_explained_in_the_page(monkeypatch, tmp_path):
    monkeypatch.setattr(moscale.pretrained, "BUNDLED_PIPELINE_DIR", tmp_path / "moscale-procedural")
    pipe, message = load_pipeline(None, "cpu")
    assert pipe is None and message.startswith("the bundled MoScale pipeline is missing from")
    page = build_demo()
    shown = [block.value for block in page.blocks.values() if getattr(block, "elem_id", None) == "load-error"]
    assert shown == [f"**No model is loaded.** {message}"]
    with pytest.raises(gr.Error, match="No model is loaded: the bundled MoScale pipeline is missing"):
        generate(MotionDemo(None, message, "cpu"))


def test_app_py_serves_the_model_named_in_moscale_model(monkeypatch, pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "pipeline")
    monkeypatch.setenv("MOSCALE_MODEL", str(tmp_path / "pipeline"))
    spec = importlib.util.spec_from_file_location("space_app", ROOT / "app.py")
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    assert isinstance(app.demo, gr.Blocks)
    assert not [block for block in app.demo.blocks.values() if getattr(block, "elem_id", None) == "load-error"]


def test_the_package_does_not_import_gradio():
    code = (
        "import pkgutil, importlib, sys, moscale\n"
        "for module in pkgutil.walk_packages(moscale.__path__, 'moscale.'):\n"
        "    if module.name != 'moscale.demo' and not module.name.endswith('__main__'):\n"
        "        importlib.import_module(module.name)\n"
        "print(sorted(name for name in sys.modules if name.split('.')[0] == 'gradio'))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_space_files_match_the_package():
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    install_requires = setup["options"]["install_requires"].split()
    space = ROOT / "examples" / "space"
    lines = (space / "requirements.txt").read_text().splitlines()
    assert [line for line in lines if line and line[0] not in "#-"] == install_requires

    front_matter = (space / "README.md").read_text().split("---\n")[1]
    fields = dict(line.split(": ", 1) for line in front_matter.splitlines())
    assert fields["sdk"] == "gradio" and (ROOT / fields["app_file"]).is_file()
    (gradio_requirement,) = setup["options.extras_require"]["demo"].split()[:1]
    assert fields["sdk_version"] in SpecifierSet(gradio_requirement.removeprefix("gradio"))

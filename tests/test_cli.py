"""The `moscale` command: generate files from a saved pipeline, and hand other subcommands to their modules."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from moscale import MoScalePipeline, cli
from moscale.motion.retarget import load_bvh_joints
from tests.helpers import tiny_pipeline


@pytest.fixture(scope="module")
def saved_pipeline(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pipeline")
    tiny_pipeline().save_pretrained(folder)
    return folder


def test_generate_writes_features_joints_bvh_and_gif(saved_pipeline, tmp_path, capsys):
    prompts = ["a person jumps twice", "a person waves with the left hand"]
    cli.main(
        [
            "generate",
            *prompts,
            "--model",
            str(saved_pipeline),
            "--num_frames",
            "48",
            "--formats",
            "npy,bvh,gif",
            "--output_dir",
            str(tmp_path),
            "--seed",
            "3",
            "--quiet",
        ]
    )
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == f"2 motion(s) from {saved_pipeline}, 8 file(s) in {tmp_path}/:"
    assert len(printed) == 1 + 2 * 4 and all(Path(line.strip()).is_file() for line in printed[1:])
    summary = json.loads((tmp_path / "prompts.json").read_text())
    assert [item["prompt"] for item in summary] == prompts and all(item["frames"] == 48 for item in summary)

    # The files hold what the pipeline gives for the same seed.
    pipe = MoScalePipeline.from_pretrained(saved_pipeline)
    out = pipe(prompts, num_frames=48, generator=torch.Generator().manual_seed(3), output_type="np")
    features = np.load(tmp_path / "00_a_person_jumps_twice_features.npy")
    joints = np.load(tmp_path / "00_a_person_jumps_twice_joints.npy")
    np.testing.assert_array_equal(features, out.features[0, :48])
    np.testing.assert_array_equal(joints, out.joints[0, :48])
    assert (tmp_path / "01_a_person_waves_with_the_left_hand.gif").stat().st_size > 0

    reimported = load_bvh_joints(tmp_path / "00_a_person_jumps_twice.bvh", mapping="humanml3d", scale=1.0)
    assert reimported.shape == joints.shape
    # A random model's bones change length from frame to frame, which a BVH skeleton cannot; its root path can.
    np.testing.assert_allclose(reimported[:, 0], joints[:, 0], rtol=1e-4, atol=1e-4)


def test_generate_uses_the_transformers_own_refinement_schedule(tmp_path):
    # A three-scale model: the command must not impose the paper's four refinement counts.
    pipe = tiny_pipeline(scales=(4, 2, 1), sample_steps_per_scale=(1, 2, 3), min_num_frames=16)
    pipe.save_pretrained(tmp_path / "three_scales")
    cli.main(["generate", "a person walks", "--model", str(tmp_path / "three_scales"), "--num_frames", "96", "--formats", "npy",
              "--output_dir", str(tmp_path / "out"), "--quiet"])  # fmt: skip
    assert np.load(tmp_path / "out" / "00_a_person_walks_features.npy").shape[0] == 96


def test_bad_format_is_refused(saved_pipeline, capsys):
    with pytest.raises(SystemExit):
        cli.main(["generate", "a person walks", "--model", str(saved_pipeline), "--formats", "npy,fbx"])
    assert "unknown output format(s) ['fbx']" in capsys.readouterr().err


def test_subcommands_reach_their_modules(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["convert", "--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    assert "usage: moscale convert" in help_text and "--vq_checkpoint" in help_text
    with pytest.raises(SystemExit):
        cli.main(["render", "--help"])
    assert "usage: moscale render" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["evaluate", "--help"])
    assert "usage: moscale evaluate" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["bvh", "--help"])
    assert "usage: moscale bvh" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["bvh", "build-dataset", "--help"])
    assert "usage: moscale bvh build-dataset" in capsys.readouterr().out


def test_every_flag_is_spelled_with_underscores(capsys):
    """One spelling per flag across the commands: diffusers' --output_dir, --num_frames, ..."""
    commands = [["generate"], ["convert"], ["render"], ["evaluate"], ["bvh", "convert"], ["bvh", "export"]]
    commands.append(["bvh", "build-dataset"])
    for command in commands:
        with pytest.raises(SystemExit):
            cli.main([*command, "--help"])
        flags = re.findall(r"(?<![\w-])--[a-z][a-z0-9_-]*", capsys.readouterr().out)
        assert flags and not [flag for flag in flags if "-" in flag[2:]], (command, flags)


NAN_BVH = """HIERARCHY
ROOT Hips
{
  OFFSET 0 0 0
  CHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation
  End Site
  {
    OFFSET 0 1 0
  }
}
MOTION
Frames: 2
Frame Time: 0.05
0 0 0 0 0 0
0 0 0 nan 0 0
"""


def _one_error_line(capsys) -> str:
    """The error line, which ends stderr (progress bars of model loading may come before it), and no traceback."""
    err = capsys.readouterr().err
    assert err.endswith(" (--debug shows the traceback)\n") and "Traceback" not in err, err
    return err.splitlines()[-1] + "\n"


def test_an_error_is_one_line_with_exit_status_2_and_writes_nothing(tmp_path, capsys):
    bad = tmp_path / "take.bvh"
    bad.write_text(NAN_BVH)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bvh", "convert", str(bad), str(tmp_path / "take.npy")])
    assert exit_info.value.code == 2
    assert _one_error_line(capsys) == (
        f"moscale bvh: error: {bad}, line 15: frame 2, channel Zrotation of joint 'Hips' is 'nan', not a finite "
        "number; fix or remove that frame (--debug shows the traceback)\n"
    )
    assert list(tmp_path.iterdir()) == [bad]


def test_generate_errors_are_one_line(saved_pipeline, tmp_path, capsys):
    missing = tmp_path / "no_such_pipeline"
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["generate", "a person walks", "--model", str(missing), "--quiet"])
    assert exit_info.value.code == 2
    assert _one_error_line(capsys) == (
        f"moscale generate: error: MoScalePipeline.from_pretrained: the folder {missing} does not exist (and it is "
        "not a Hugging Face Hub id); pass the folder that save_pretrained wrote (--debug shows the traceback)\n"
    )
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["generate", "a person walks", "  ", "--model", str(saved_pipeline), "--quiet"])
    assert exit_info.value.code == 2
    assert "moscale generate: error: prompt 1 is '  '" in _one_error_line(capsys)


def test_debug_shows_the_traceback(tmp_path):
    bad = tmp_path / "take.bvh"
    bad.write_text(NAN_BVH)
    for argv in (["--debug", "bvh", "convert", str(bad), str(tmp_path / "a.npy")],
                 ["bvh", "convert", str(bad), str(tmp_path / "a.npy"), "--debug"]):  # fmt: skip
        with pytest.raises(ValueError, match="channel Zrotation of joint 'Hips' is 'nan'"):
            cli.main(argv)

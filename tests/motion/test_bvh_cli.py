"""`moscale bvh convert` and `moscale bvh export` write what the functions they call return."""

import shutil

import numpy as np
import pytest

from moscale.motion.bvh import read_bvh
from moscale.motion.bvh_cli import main
from tests.helpers import reimported_joints
from tests.shared_data import BVH_DIR

needs_data = pytest.mark.usefixtures("shared_bvh_files")  # tests/motion/conftest.py


@needs_data
def test_convert_and_export_commands(tmp_path):
    main(["convert", str(BVH_DIR / "cmu_jumping_jacks.bvh"), str(tmp_path / "joints.npy")])
    main(["convert", str(BVH_DIR / "cmu_jumping_jacks.bvh"), str(tmp_path / "features.npy"), "--features"])
    joints, features = np.load(tmp_path / "joints.npy"), np.load(tmp_path / "features.npy")
    assert joints.shape == (83, 22, 3) and features.shape == (82, 263)
    main(["export", str(tmp_path / "joints.npy"), str(tmp_path / "joints.bvh")])
    main(["export", str(tmp_path / "features.npy"), str(tmp_path / "features.bvh")])
    assert np.abs(reimported_joints(tmp_path / "joints.bvh") - joints).max() < 0.01
    assert read_bvh(tmp_path / "features.bvh").num_frames == 82


def _damaged_copy(folder, old: str, new: str, count: int = 1):
    text = (BVH_DIR / "cmu_jumping_jacks.bvh").read_text()
    assert old in text
    damaged = folder / "cmu_jumping_jacks.bvh"
    damaged.write_text(text.replace(old, new, count))
    return damaged


@needs_data
def test_convert_refuses_a_nan_offset_or_motion_value_and_writes_nothing(tmp_path):
    bad = _damaged_copy(tmp_path, "OFFSET 2.57139 -7.06484", "OFFSET nan -7.06484")
    with pytest.raises(ValueError, match=f"{bad}, line 16: the OFFSET of joint 'LeftKnee' must be a finite number"):
        main(["convert", str(bad), str(tmp_path / "joints.npy")])
    # One value of frame 50: every joint below the root would come out NaN in that frame.
    rows = bad.read_text().replace("nan -7.06484", "2.57139 -7.06484").splitlines()
    frame_50 = rows[187 + 49].split()
    frame_50[4] = "nan"
    rows[187 + 49] = " ".join(frame_50)
    bad.write_text("\n".join(rows) + "\n")
    for args in (["--features"], []):
        with pytest.raises(ValueError, match=f"{bad}, line 237: frame 50, channel Yrotation of joint 'Hips' is 'nan'"):
            main(["convert", str(bad), str(tmp_path / "motion.npy"), *args])
    assert list(tmp_path.iterdir()) == [bad]


@needs_data
def test_build_dataset_with_one_bad_file_writes_nothing(tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    shutil.copy(BVH_DIR / "wave_hello.bvh", clips / "wave_hello.bvh")
    bad = _damaged_copy(clips, "-1.9935 17.6817", "-1.9935 inf")
    captions = tmp_path / "captions.tsv"
    captions.write_text("cmu_jumping_jacks\ta person does jumping jacks.\nwave_hello\ta person waves.\n")
    out = tmp_path / "dataset"
    with pytest.raises(ValueError, match=f"{bad}, line 188: frame 1, channel Yposition of joint 'Hips' is 'inf'"):
        main(["build-dataset", str(clips), "--captions", str(captions), "--output_dir", str(out)])
    assert not out.exists()

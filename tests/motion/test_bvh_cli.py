"""`moscale bvh convert` and `moscale bvh export` write what the functions they call return."""

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

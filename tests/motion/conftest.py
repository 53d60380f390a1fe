import pytest

from tests.shared_data import BVH_DIR, HUMANML3D_SAMPLE, SHARED_BVH_FILES, SHARED_DATA


@pytest.fixture(scope="session")
def shared_bvh_files():
    """The shared BVH files are part of the test data, as in CI: their absence is a failure, not a skip."""
    missing = [name for name in SHARED_BVH_FILES if not (BVH_DIR / f"{name}.bvh").is_file()]
    if missing or not (HUMANML3D_SAMPLE / "new_joints" / "012314.npy").is_file():
        pytest.fail(
            f"shared test data missing under {SHARED_DATA} ({missing or 'humanml3d_sample'}): check out shared/ "
            "beside the repository or set MOSCALE_SHARED_DATA"
        )

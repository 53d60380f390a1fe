"""The one HumanML3D-folder writer: clips, statistics (a group that never varies), split lists with all.txt."""

import numpy as np
import pytest

from moscale.motion.data import load_mean_std, read_captions, read_split
from moscale.motion.dataset_writer import (
    FeatureMoments,
    create_dataset_folder,
    write_clip,
    write_splits,
    write_statistics,
)
from moscale.motion.representation import HUMANML3D, recover_from_ric
from moscale.synthetic import write_dataset
from tests.shared_data import HUMANML3D_SAMPLE

CONTACTS = HUMANML3D.feature_groups[-1]


def test_a_clip_is_its_features_their_joints_and_its_captions(tmp_path):
    features = np.load(HUMANML3D_SAMPLE / "new_joint_vecs" / "012314.npy")
    root = create_dataset_folder(tmp_path / "data")
    write_clip(root, "012314", features.astype(np.float64), ["a person walks.#a/DET person/NOUN walk/VERB#0.0#0.0"])
    written = np.load(root / "new_joint_vecs" / "012314.npy")
    assert written.dtype == np.float32 and np.array_equal(written, features)
    np.testing.assert_array_equal(np.load(root / "new_joints" / "012314.npy"), recover_from_ric(features))
    assert [caption.text for caption in read_captions(root / "texts" / "012314.txt")] == ["a person walks."]


def test_pooled_moments_give_the_statistics_of_all_rows():
    rng = np.random.default_rng(0)
    clips = [rng.normal(3.0, 2.0, size=(frames, 263)) for frames in (40, 57, 81)]
    pooled = sum((FeatureMoments.of(clip) for clip in clips), FeatureMoments())
    mean, std = pooled.mean_std()
    stacked = np.concatenate(clips)
    np.testing.assert_allclose(mean, stacked.mean(0), rtol=1e-12)
    np.testing.assert_allclose(std, stacked.std(0), rtol=1e-9)
    with pytest.raises(ValueError, match="at least one clip"):
        FeatureMoments().mean_std()


def test_a_group_that_never_varies_is_left_unscaled(tmp_path):
    rng = np.random.default_rng(0)
    features = rng.normal(size=(100, 263))
    features[:, CONTACTS] = 1.0  # both feet on the ground in every frame
    with pytest.warns(UserWarning, match=r"\(259, 263\).*do not vary"):
        mean, std = write_statistics(tmp_path, FeatureMoments.of(features))
    assert (std[CONTACTS] == 1.0).all() and (mean[CONTACTS] == 1.0).all()
    # Every other group keeps its averaged spread, and the loaders accept the files.
    for group in HUMANML3D.feature_groups[:-1]:
        assert np.unique(std[group]).size == 1 and 0.8 < std[group][0] < 1.2
    loaded_mean, loaded_std = load_mean_std(tmp_path, 263)
    np.testing.assert_array_equal(loaded_std, std)
    np.testing.assert_array_equal(loaded_mean, mean)


def test_split_lists_and_all_txt(tmp_path):
    write_splits(tmp_path, {"train": ["b", "d"], "val": ["c"], "test": ["a"]})
    assert [read_split(tmp_path, split) for split in ("train", "val", "test", "all")] == [
        ["b", "d"],
        ["c"],
        ["a"],
        ["a", "b", "c", "d"],
    ]


def test_the_synthetic_dataset_writes_through_it(tmp_path):
    root = write_dataset(tmp_path / "synthetic", 4, seed=1, workers=1, progress=False)
    ids = sorted(path.stem for path in (root / "new_joint_vecs").glob("*.npy"))
    assert read_split(root, "all") == ids == sorted(sum((read_split(root, s) for s in ("train", "val", "test")), []))

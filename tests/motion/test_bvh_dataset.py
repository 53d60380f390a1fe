"""`moscale bvh build-dataset`: a HumanML3D-layout folder from BVH files and captions, and the captions it warns of."""

import shutil

import numpy as np
import pytest

from moscale.motion.bvh_cli import main
from moscale.motion.bvh_dataset import build_dataset, read_caption_table
from moscale.motion.representation import recover_from_ric
from tests.shared_data import BVH_DIR

needs_data = pytest.mark.usefixtures("shared_bvh_files")  # tests/motion/conftest.py


@needs_data
def test_build_dataset_command(tmp_path, capsys):
    captions = tmp_path / "captions.tsv"
    captions.write_text(
        "# name<TAB>caption[<TAB>start<TAB>end]\n"
        "cmu_jumping_jacks\ta person does jumping jacks.\n"
        "wave_hello\ta person waves hello with the right hand.\n"
        "wave_hello\tsomeone waves.\t1.0\t4.0\n"
    )
    clips = tmp_path / "clips"
    clips.mkdir()
    for name in ("cmu_jumping_jacks", "wave_hello"):
        shutil.copy(BVH_DIR / f"{name}.bvh", clips / f"{name}.bvh")
    out = tmp_path / "dataset"
    main(["build-dataset", str(clips), "--captions", str(captions), "--output_dir", str(out), "--val_fraction", "0.5"])
    assert "1 train, 1 val, 0 test" in capsys.readouterr().out
    for name, frames in (("cmu_jumping_jacks", 82), ("wave_hello", 139)):
        features = np.load(out / "new_joint_vecs" / f"{name}.npy")
        assert features.shape == (frames, 263)
        np.testing.assert_allclose(np.load(out / "new_joints" / f"{name}.npy"), recover_from_ric(features))
    texts = (out / "texts" / "wave_hello.txt").read_text().splitlines()
    assert texts == [
        "a person waves hello with the right hand.#a/OTHER person/OTHER waves/OTHER hello/OTHER "
        "with/OTHER the/OTHER right/OTHER hand/OTHER#0.0#0.0",
        "someone waves.#someone/OTHER waves/OTHER#1.0#4.0",
    ]
    mean, std = np.load(out / "Mean.npy"), np.load(out / "Std.npy")
    assert mean.shape == std.shape == (263,)
    assert np.unique(std[4:67]).size == 1 and np.unique(std[259:]).size == 1 and (std > 0).all()
    assert sorted((out / "all.txt").read_text().split()) == ["cmu_jumping_jacks", "wave_hello"]
    assert len((out / "train.txt").read_text().split()) == len((out / "val.txt").read_text().split()) == 1

    captions.write_text("wave_hello\tonly one clip has a caption\n")
    with pytest.raises(ValueError, match=r"clips without a caption \['cmu_jumping_jacks'\]"):
        build_dataset([clips], captions, tmp_path / "other")
    captions.write_text("wave_hello a caption without a tab\n")
    with pytest.raises(ValueError, match="tab-separated"):
        read_caption_table(captions)
    captions.write_text("wave_hello\twaves\t0\t0\nwave_hello\twaves twice\t4.0\t1.5\n")
    with pytest.raises(ValueError) as raised:
        read_caption_table(captions)
    assert str(raised.value) == (
        f"{captions}, line 2: start 4 s and end 1.5 s must satisfy 0 <= start < end (or be 0 0 for the whole clip); "
        "as written the caption would cover no frame"
    )


@needs_data
def test_build_dataset_names_the_captions_the_loaders_skip(tmp_path, capsys):
    from moscale.motion.data import load_motion_dataset

    captions = tmp_path / "captions.tsv"
    captions.write_text(
        "cmu_01_01\ta person jumps forward, then turns around.\t1.0\t8.5\n"  # a 23 s take: skipped, part too
        "cmu_jumping_jacks\ta person does jumping jacks.\n"
        "cmu_jumping_jacks\tthe first second.\t0.0\t1.0\n"  # a 20-frame part: skipped alone
    )
    clips = tmp_path / "clips"
    clips.mkdir()
    for name in ("cmu_01_01", "cmu_jumping_jacks"):
        shutil.copy(BVH_DIR / f"{name}.bvh", clips / f"{name}.bvh")
    out = tmp_path / "dataset"
    main(["build-dataset", str(clips), "--captions", str(captions), "--output_dir", str(out)])
    note = capsys.readouterr().out
    assert "cmu_01_01 'a person jumps forward, then turns around.' (the motion has 458 frames)" in note
    assert "cmu_jumping_jacks 'the first second.' (the part has 20 frames)" in note
    assert "does jumping jacks" not in note
    loaded = load_motion_dataset(out, "train", cache_dir=tmp_path / "cache")
    assert loaded["captions"] == [["a person does jumping jacks."]]

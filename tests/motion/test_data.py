import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from moscale.motion.data import (
    HUMANML3D_FORMAT,
    KIT_ML_FORMAT,
    MAX_MOTION_LENGTH,
    MotionCollator,
    MotionDataError,
    MotionFolderFormat,
    MotionTransform,
    TransformedMotionDataset,
    index_motion_folder,
    load_mean_std,
    load_motion_dataset,
    parse_caption_line,
)
from tests.shared_data import HUMANML3D_SAMPLE as SAMPLE
from tests.shared_data import SHARED_DATA

EVALUATOR_META = SHARED_DATA / "t2m_evaluator_meta"

WHOLE = "a person walks forward#a/DET person/NOUN walk/VERB forward/ADV#0.0#0.0"


def motion(frames: int, dim: int = 263, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((frames, dim)).astype(np.float32)


def make_folder(root: Path, motions: dict, texts: dict, split: str = "train", dim: int = 263) -> Path:
    (root / "new_joint_vecs").mkdir(parents=True)
    (root / "texts").mkdir()
    for motion_id, array in motions.items():
        np.save(root / "new_joint_vecs" / f"{motion_id}.npy", array)
    for motion_id, text in texts.items():
        (root / "texts" / f"{motion_id}.txt").write_text(text)
    (root / f"{split}.txt").write_text("\n".join(motions) + "\n")
    rng = np.random.default_rng(123)
    np.save(root / "Mean.npy", rng.standard_normal(dim).astype(np.float32))
    np.save(root / "Std.npy", rng.uniform(0.5, 2.0, dim).astype(np.float32))
    return root


def load(root: Path, tmp_path: Path, **kwargs):
    return load_motion_dataset(root, kwargs.pop("split", "train"), cache_dir=tmp_path / "hf_cache", **kwargs)


# ---------------------------------------------------------------- captions, sub-clips, length rules


def test_parse_caption_line_fields():
    caption = parse_caption_line("a man jumps#a/DET man/NOUN jump/VERB#1.5#3.0")
    assert caption.text == "a man jumps"
    assert caption.tokens == ("a/DET", "man/NOUN", "jump/VERB")
    assert (caption.start, caption.end) == (1.5, 3.0)
    assert not caption.is_whole_motion
    # 'nan' times mean the whole motion, as in the authors' loader.
    assert parse_caption_line("a man jumps#a/DET#nan#nan").is_whole_motion
    # A '#' inside the caption stays in the caption: the last three fields are tokens, start, end.
    assert parse_caption_line("press #1#press/VERB#0.0#0.0").text == "press #1"


def test_whole_motion_and_subclip_items(tmp_path):
    frames = motion(120)
    text = "\n".join(
        [
            WHOLE,
            "someone strolls#someone/PRON stroll/VERB#0.0#0.0",
            "the person turns#the/DET person/NOUN turn/VERB#1.0#4.0",  # frames 20:80
            "too short#too/ADV short/ADJ#0.5#2.0",  # frames 10:40, 30 < 40
            "runs off the end#run/VERB#3.0#9.0",  # frames 60:180 -> 60:120
            "",  # blank lines are not captions
        ]
    )
    root = make_folder(tmp_path / "hml", {"000001": frames}, {"000001": text})
    index = index_motion_folder(root, "train")
    assert [item.id for item in index.items] == ["000001", "000001:3", "000001:5"]
    report = index.report
    assert (report.whole_motion_items, report.subclip_items, report.subclips_too_short) == (1, 2, 1)

    dataset = load(root, tmp_path)
    rows = {row["id"]: row for row in dataset.with_format("numpy", columns=["motion"], output_all_columns=True)}
    whole = rows["000001"]
    assert whole["captions"] == ["a person walks forward", "someone strolls"]
    assert whole["tokens"][1] == ["someone/PRON", "stroll/VERB"]
    np.testing.assert_array_equal(whole["motion"], frames)
    assert whole["length"] == 120 and whole["motion"].dtype == np.float32
    turn = rows["000001:3"]
    assert turn["captions"] == ["the person turns"]
    assert (turn["start_frame"], turn["end_frame"], turn["length"]) == (20, 80, 60)
    np.testing.assert_array_equal(turn["motion"], frames[20:80])
    np.testing.assert_array_equal(rows["000001:5"]["motion"], frames[60:120])


def test_length_rules_drop_only_out_of_range_clips(tmp_path, caplog):
    motions = {"short": motion(39), "min": motion(40), "max": motion(199), "long": motion(200), "sub": motion(150)}
    texts = {name: WHOLE for name in motions}
    # The 200-frame motion has a valid 60-frame sub-clip: the authors drop it with its motion, and so do we.
    texts["long"] = WHOLE + "\nturns#turn/VERB#1.0#4.0"
    # A motion whose captions all carry times gives only sub-clip items (a range starting at 0 is a sub-clip).
    texts["sub"] = "turns#turn/VERB#0.5#3.5\nstarts#start/VERB#0.0#1.0"
    root = make_folder(tmp_path / "hml", motions, texts)
    index = index_motion_folder(root, "train", HUMANML3D_FORMAT)
    assert sorted(item.id for item in index.items) == ["max", "min", "sub:1"]
    report = index.report
    assert (report.motions_listed, report.motions_too_short, report.motions_too_long) == (5, 1, 1)
    assert (report.subclips_too_short, report.motions_with_only_subclip_captions) == (1, 1)
    assert report.items == 3
    assert "3 items" in report.summary()
    with caplog.at_level(logging.INFO, logger="moscale.motion.data"):
        assert sorted(load(root, tmp_path)["length"]) == [40, 60, 199]
    assert report.summary() in caplog.text  # the counts are logged when a dataset is loaded

    (root / "train.txt").write_text("short\nlong\n")
    with pytest.raises(MotionDataError, match="no item left after the length rules"):
        load(root, tmp_path)


def test_kit_ml_format(tmp_path):
    motions = {"00001": motion(24, 251), "00002": motion(23, 251), "00003": motion(100, 251)}
    texts = {"00001": WHOLE, "00002": WHOLE, "00003": "kicks#kick/VERB#1.0#3.0"}
    root = make_folder(tmp_path / "kit", motions, texts, dim=251)
    index = index_motion_folder(root, "train", "kit-ml")
    # 12.5 fps: 1.0 s -> frame 12, 3.0 s -> frame 37.
    assert {item.id: (item.start_frame, item.end_frame) for item in index.items} == {
        "00001": (0, 24),
        "00003:1": (12, 37),
    }
    assert index.report.motions_too_short == 1
    authors_times = MotionFolderFormat(skeleton=KIT_ML_FORMAT.skeleton, min_length=24, max_length=200, caption_fps=20)
    assert index_motion_folder(root, "train", authors_times).items[1].end_frame == 60
    dataset = load(root, tmp_path, format=KIT_ML_FORMAT)
    assert dataset.features["motion"].shape == (None, 251)
    # A KIT-ML folder read as HumanML3D is refused by its feature size.
    with pytest.raises(MotionDataError, match=r"00001\.npy.*\(24, 251\).*263"):
        index_motion_folder(root, "train", HUMANML3D_FORMAT)


def test_the_all_split_loads(tmp_path):
    # HumanML3D ships all.txt, and `moscale bvh build-dataset` writes one; datasets reserves the name "all".
    root = make_folder(tmp_path / "data", {"000001": motion(60), "000002": motion(80)}, {}, split="all")
    for motion_id in ("000001", "000002"):
        (root / "texts" / f"{motion_id}.txt").write_text(WHOLE)
    dataset = load(root, tmp_path, split="all")
    assert sorted(dataset["id"]) == ["000001", "000002"]
    assert sorted(row["id"] for row in load(root, tmp_path, split="all", streaming=True)) == ["000001", "000002"]


# ---------------------------------------------------------------- bad folders and files


def test_missing_folder_split_and_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load(tmp_path / "nowhere", tmp_path)
    root = make_folder(tmp_path / "hml", {"a": motion(60)}, {"a": WHOLE})
    with pytest.raises(FileNotFoundError, match=r"test\.txt.*train\.txt"):
        load(root, tmp_path, split="test")
    (root / "train.txt").write_text("a\nb\n")
    with pytest.raises(FileNotFoundError, match=r"'b'.*missing_files='skip'"):
        index_motion_folder(root, "train")
    index = index_motion_folder(root, "train", missing_files="skip")
    assert index.report.motions_missing == ["b"] and [item.id for item in index.items] == ["a"]
    (root / "train.txt").write_text("a\n\na\n")
    with pytest.raises(MotionDataError, match="more than once"):
        index_motion_folder(root, "train")
    shutil.rmtree(root / "texts")
    with pytest.raises(FileNotFoundError, match="texts"):
        index_motion_folder(root, "train")


def test_wrong_feature_size_and_non_finite_values(tmp_path):
    root = make_folder(tmp_path / "size", {"a": motion(60, dim=262)}, {"a": WHOLE})
    with pytest.raises(MotionDataError, match=r"a\.npy: motion shape \(60, 262\)"):
        load(root, tmp_path)
    np.save(root / "new_joint_vecs" / "a.npy", motion(60)[:, :, None])
    with pytest.raises(MotionDataError, match=r"\(60, 263, 1\)"):
        index_motion_folder(root, "train")
    (root / "new_joint_vecs" / "a.npy").write_bytes(b"not an npy file")
    with pytest.raises(MotionDataError, match=r"a\.npy: not a readable numeric \.npy array"):
        index_motion_folder(root, "train")

    bad = motion(60)
    bad[17, 5] = np.nan
    bad[30, 0] = np.inf
    root = make_folder(tmp_path / "nan", {"a": motion(60), "b": bad}, {"a": WHOLE, "b": WHOLE})
    with pytest.raises(MotionDataError, match=r"b\.npy: motion has NaN or inf values in frame\(s\) \[17, 30\]"):
        load(root, tmp_path)
    stream = load(root, tmp_path, streaming=True)  # the streaming variant finds it when it reads the motion
    with pytest.raises(MotionDataError, match=r"b\.npy.*NaN"):
        list(stream)


@pytest.mark.parametrize(
    "line, message",
    [
        ("no fields here", "4 fields"),
        ("walks#walk/VERB#0.0", "4 fields"),
        ("walks#walk/VERB#zero#1.0", "start time 'zero' is not a number"),
        ("walks#walk/VERB#0.0#-2.0", "end time '-2.0' must be"),
        ("walks#walk VERB#0.0#0.0", "tokens must look like 'word/POS'"),
        ("  #walk/VERB#0.0#0.0", "caption.*empty"),
    ],
)
def test_malformed_caption_line_names_file_and_line(tmp_path, line, message):
    root = make_folder(tmp_path / "hml", {"a": motion(60)}, {"a": f"{WHOLE}\n{WHOLE}\n{line}\n"})
    with pytest.raises(MotionDataError, match=rf"texts[/\\]a\.txt, line 3: .*{message}"):
        load(root, tmp_path)


def test_caption_ending_before_it_starts_is_skipped_with_a_warning(tmp_path):
    text = f"{WHOLE}\n\nturns#turn/VERB#3.0#1.0\nstops#stop/VERB#2.5#nan\nwaits#wait/VERB#1.0#3.0"
    root = make_folder(tmp_path / "hml", {"a": motion(120)}, {"a": text})
    with pytest.warns(UserWarning) as warned:
        index = index_motion_folder(root, "train")
    caption_file = root / "texts" / "a.txt"
    assert [str(w.message) for w in warned] == [
        f"{caption_file}, line 3: start 3 s is not before end 1 s, so this caption covers no frame and is skipped; "
        "write start < end, or 0 and 0 for the whole motion",
        f"{caption_file}, line 4: start 2.5 s is not before end 0 s, so this caption covers no frame and is "
        "skipped; write start < end, or 0 and 0 for the whole motion",
    ]
    assert [item.id for item in index.items] == ["a", "a:4"]  # items count captions, not file lines
    assert index.report.subclips_too_short == 2


def test_caption_file_without_captions(tmp_path):
    root = make_folder(tmp_path / "hml", {"a": motion(60)}, {"a": "\n\n"})
    with pytest.raises(MotionDataError, match=r"a\.txt: no caption line"):
        index_motion_folder(root, "train")


def test_mean_std_files(tmp_path):
    root = make_folder(tmp_path / "hml", {"a": motion(60)}, {"a": WHOLE})
    mean, std = load_mean_std(root, 263)
    np.testing.assert_array_equal(mean, np.load(root / "Mean.npy"))
    # The evaluator's meta folder names them in lower case; an explicit pair of paths works too.
    meta = tmp_path / "meta"
    meta.mkdir()
    np.save(meta / "mean.npy", np.zeros(263))
    np.save(meta / "std.npy", np.full(263, 2.0))
    assert load_mean_std(meta, 263)[1][0] == 2.0
    assert load_mean_std((meta / "mean.npy", meta / "std.npy"), 263)[0].shape == (263,)
    with pytest.raises(MotionDataError, match=r"shape \(251,\)"):
        load_mean_std(meta, 251)
    np.save(meta / "std.npy", np.zeros(263))
    with pytest.raises(MotionDataError, match="> 0"):
        load_mean_std(meta, 263)
    (root / "Std.npy").unlink()
    with pytest.raises(FileNotFoundError, match="no Mean.npy/Std.npy"):
        load_mean_std(root, 263)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_mean_std((root / "Mean.npy", root / "Std.npy"), 263)


# ---------------------------------------------------------------- transform, collator, streaming


def test_transform_deterministic_crop_and_normalisation(tmp_path):
    frames = motion(123)
    root = make_folder(tmp_path / "hml", {"a": frames}, {"a": f"{WHOLE}\nsecond#second/ADJ#0.0#0.0"})
    mean, std = load_mean_std(root, 263)
    transform = MotionTransform(mean, std, random_crop=False, random_caption=False)
    dataset = load(root, tmp_path)
    item = dataset.with_transform(transform)[0]
    assert item["length"] == 120 and item["motion"].shape == (120, 263) and item["motion"].dtype == np.float32
    np.testing.assert_allclose(item["motion"], (frames[:120] - mean) / std, rtol=1e-6, atol=1e-6)
    assert item["caption"] == "a person walks forward" and item["tokens"][0] == "a/DET"
    # The numpy-reading torch wrapper gives the same item.
    wrapped = TransformedMotionDataset(dataset, transform)
    assert len(wrapped) == 1
    same = wrapped[0]
    np.testing.assert_array_equal(same["motion"], item["motion"])
    assert (same["length"], same["caption"], same["tokens"], same["id"]) == (120, item["caption"], item["tokens"], "a")


def crop_offset(frames: np.ndarray, item: dict) -> int:
    """The frame where a (un-normalised) transformed item starts inside the source motion."""
    length = item["length"]
    offsets = [o for o in range(len(frames) - length + 1) if np.array_equal(frames[o : o + length], item["motion"])]
    assert len(offsets) == 1
    return offsets[0]


def test_transform_random_crop_matches_authors_rule(tmp_path):
    mean, std = np.zeros(263), np.ones(263)
    transform = MotionTransform(mean, std, seed=0)
    lengths = [transform.crop_length(123) for _ in range(6000)]
    assert set(lengths) == {116, 120}
    assert abs(lengths.count(116) / len(lengths) - 1 / 3) < 0.02
    # Large units (>= 10) never take the shorter option, as in the authors' loader.
    assert {MotionTransform(mean, std, unit_length=10, seed=0).crop_length(123) for _ in range(200)} == {120}

    frames = motion(123)
    root = make_folder(tmp_path / "hml", {"a": frames}, {"a": f"{WHOLE}\nsecond#second/ADJ#0.0#0.0"})
    dataset = load(root, tmp_path)

    def draws(seed: int) -> list[tuple[int, int, str]]:
        transformed = dataset.with_transform(MotionTransform(mean, std, seed=seed))
        items = [transformed[0] for _ in range(40)]
        return [(item["length"], crop_offset(frames, item), item["caption"]) for item in items]

    first = draws(3)
    assert first == draws(3)  # same seed, same crops and captions
    assert first != draws(4)
    assert {length for length, _, _ in first} == {116, 120}
    assert len({offset for _, offset, _ in first}) > 3
    assert {caption for _, _, caption in first} == {"a person walks forward", "second"}


def test_collator_pads_to_batch_or_fixed_length():
    examples = [
        {"id": "a", "motion": np.ones((8, 263), np.float32), "length": 8, "caption": "x", "tokens": ["x/X"]},
        {"id": "b", "motion": np.full((12, 263), 2, np.float32), "length": 12, "caption": "y", "tokens": ["y/Y"]},
    ]
    batch = MotionCollator()(examples)
    assert batch["motions"].shape == (2, 12, 263) and batch["motions"].dtype == torch.float32
    assert batch["lengths"].tolist() == [8, 12]
    assert batch["motions"][0, 8:].abs().sum() == 0 and batch["motions"][0, :8].eq(1).all()
    assert batch["mask"].sum(dim=1).tolist() == [8, 12]
    assert batch["captions"] == ["x", "y"] and batch["tokens"] == [["x/X"], ["y/Y"]] and batch["ids"] == ["a", "b"]
    fixed = MotionCollator(max_length=MAX_MOTION_LENGTH)(examples)
    assert fixed["motions"].shape == (2, 196, 263) and fixed["mask"].shape == (2, 196)
    with pytest.raises(ValueError, match="more than max_length=10"):
        MotionCollator(max_length=10)(examples)
    no_tokens = MotionCollator()([{"motion": np.ones((4, 263)), "caption": "z"}])
    assert "tokens" not in no_tokens and no_tokens["captions"] == ["z"]


def test_streaming_gives_the_same_items(tmp_path):
    motions = {f"{i:06d}": motion(40 + 13 * i, seed=i) for i in range(5)}
    texts = {name: f"{WHOLE}\nclip#clip/NOUN#0.5#2.75" for name in motions}
    root = make_folder(tmp_path / "hml", motions, texts)
    mapped = load(root, tmp_path).with_format("numpy", columns=["motion"], output_all_columns=True)
    streamed = list(load(root, tmp_path, streaming=True).with_format("numpy"))
    assert len(streamed) == len(mapped) == 5 + 4  # the 40-frame motion has no 45-frame sub-clip (10:40 is 30)
    for expected, got in zip(mapped, streamed):
        assert got["id"] == expected["id"] and list(got["captions"]) == expected["captions"]
        np.testing.assert_array_equal(got["motion"], expected["motion"])

    mean, std = load_mean_std(root, 263)
    transform = MotionTransform(mean, std, random_crop=False, random_caption=False)
    stream = load(root, tmp_path, streaming=True)
    loader = DataLoader(
        stream.map(transform, batched=True, remove_columns=list(stream.features)),
        batch_size=4,
        collate_fn=MotionCollator(),
    )
    batches = list(loader)
    assert [len(b["captions"]) for b in batches] == [4, 4, 1]
    # 000000 (40 frames), 000001 (53 -> 52), its sub-clip 10:53 (43 -> 40), 000002 (66 -> 64)
    assert batches[0]["lengths"].tolist() == [40, 52, 40, 64]


def test_dataloader_workers_are_seeded_and_differ(tmp_path):
    frames = motion(150)
    motions = {f"{i:06d}": frames for i in range(16)}
    root = make_folder(tmp_path / "hml", motions, {name: WHOLE for name in motions})
    dataset = TransformedMotionDataset(load(root, tmp_path), MotionTransform(np.zeros(263), np.ones(263), seed=5))

    def crops() -> list[list[tuple[int, int]]]:
        torch.manual_seed(0)
        loader = DataLoader(dataset, batch_size=8, num_workers=2, collate_fn=lambda items: items)
        return [[(item["length"], crop_offset(frames, item)) for item in batch] for batch in loader]

    worker0_batch, worker1_batch = crops()
    assert [worker0_batch, worker1_batch] == crops()  # a seeded torch replays the run
    assert worker0_batch != worker1_batch  # the two workers do not share one random stream


def test_cache_follows_changed_files(tmp_path):
    root = make_folder(tmp_path / "hml", {"a": motion(60)}, {"a": WHOLE})
    assert load(root, tmp_path)[0]["length"] == 60
    np.save(root / "new_joint_vecs" / "a.npy", motion(80))
    os.utime(root / "new_joint_vecs" / "a.npy", ns=(1, 1))
    assert load(root, tmp_path)[0]["length"] == 80
    (root / "texts" / "a.txt").write_text("new caption#new/ADJ#0.0#0.0")
    assert load(root, tmp_path)[0]["captions"] == ["new caption"]


# ---------------------------------------------------------------- the real HumanML3D clip


def test_real_humanml3d_clip_parses(tmp_path):
    if not SAMPLE.is_dir():  # shared test data, as in CI: its absence is a failure, not a skip
        pytest.fail(f"HumanML3D sample not found at {SAMPLE}; set MOSCALE_HUMANML3D_SAMPLE")
    root = tmp_path / "HumanML3D"
    for name in ("new_joint_vecs", "texts"):
        shutil.copytree(SAMPLE / name, root / name)
    for name in ("Mean.npy", "Std.npy"):
        shutil.copy(SAMPLE / name, root / name)
    ids = sorted(path.stem for path in (root / "new_joint_vecs").glob("*.npy"))
    (root / "test.txt").write_text("\n".join(ids) + "\n")

    index = index_motion_folder(root, "test")
    dataset = load(root, tmp_path, split="test").with_format("numpy", columns=["motion"], output_all_columns=True)
    assert len(dataset) == index.report.items > 0
    for row in dataset:
        source = np.load(root / "new_joint_vecs" / f"{row['motion_id']}.npy")
        np.testing.assert_array_equal(row["motion"], source[row["start_frame"] : row["end_frame"]])
        lines = (root / "texts" / f"{row['motion_id']}.txt").read_text().splitlines()
        assert set(row["captions"]) <= {line.split("#")[0] for line in lines}
        assert all("/" in token for tokens in row["tokens"] for token in tokens)
    clip = {row["id"]: row for row in dataset}["012314"]  # the shared sample: 170 frames, three whole-motion captions
    assert clip["length"] == 170 and len(clip["captions"]) == 3
    assert clip["tokens"][1] == ["walk/VERB", "sideways/ADV", "and/CCONJ", "almost/ADV", "fall/VERB"]

    # The dataset's statistics and the evaluator's (which the authors' code uses) both normalise it.
    stats = [
        load_mean_std(root, 263),
        load_mean_std((EVALUATOR_META / "t2m_mean.npy", EVALUATOR_META / "t2m_std.npy"), 263),
    ]
    raw = dataset[0]["motion"]
    for mean, std in stats:
        transform = MotionTransform(mean, std, random_crop=False, random_caption=False)
        batch = MotionCollator(max_length=MAX_MOTION_LENGTH)([dataset.with_transform(transform)[0]])
        length = int(batch["lengths"][0])
        assert length == len(raw) // 4 * 4 and batch["motions"].shape == (1, 196, 263)
        expected = (raw[:length] - mean) / std
        np.testing.assert_allclose(batch["motions"][0, :length].numpy(), expected, rtol=1e-5, atol=1e-5)
        assert batch["motions"][0, length:].abs().sum() == 0

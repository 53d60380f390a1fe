"""moscale.evaluation.t2m_evaluator against the T2M evaluator case of the metrics reference folder (the authors' wrapper output).

The folder is `../shared/data/metrics_reference` beside the repository, or MOSCALE_METRICS_FIXTURE. Its
`humanml3d/text_mot_match/model/finest.tar` is a random-weight checkpoint with the real layout.
"""

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from moscale.evaluation import t2m_evaluator as ev
from tests.shared_data import METRICS_FIXTURE as FIXTURE
from tests.shared_data import SHARED_DATA as SHARED
from tests.shared_data import load_metrics_case

RTOL = 1e-6


@pytest.fixture(scope="module")
def case():
    return load_metrics_case(as_torch=True)


@pytest.fixture(scope="module")
def evaluator():
    return ev.T2MEvaluator.from_pretrained(FIXTURE)


def assert_rows_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float = RTOL) -> None:
    """Each row (one embedding) within ``rtol`` of the reference, relative to the row's norm."""
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    error = (actual - expected).flatten(1).norm(dim=1) / expected.flatten(1).norm(dim=1)
    assert error.max().item() <= rtol, f"max relative row error {error.max().item():.3g}"


def inputs(case):
    tensors, _ = case
    return tuple(tensors[f"evaluator.in.{key}"] for key in ("word_embs", "pos_ohot", "cap_lens", "motions", "m_lens"))


def test_loads_the_checkpoint_with_its_layer_sizes(case, evaluator):
    _, meta = case
    opt, scalars = meta["scalars"]["evaluator.opt"], meta["scalars"]
    assert evaluator.dim_pose == opt["dim_pose"]
    assert evaluator.unit_length == opt["unit_length"]
    assert evaluator.text_encoder.pos_emb.weight.shape == (opt["dim_word"], opt["dim_pos_ohot"])
    assert evaluator.text_encoder.gru.hidden_size == opt["dim_text_hidden"]
    assert evaluator.motion_encoder.gru.hidden_size == opt["dim_motion_hidden"]
    assert evaluator.motion_encoder.output_net[3].out_features == opt["dim_coemb_hidden"]
    assert sum(p.numel() for p in evaluator.parameters()) == scalars["evaluator.checkpoint_num_params"]
    assert all(p.dtype == torch.float32 for p in evaluator.parameters())
    assert not evaluator.training


def test_every_folder_form_loads_the_same_weights(evaluator):
    checkpoint = FIXTURE / "humanml3d" / "text_mot_match" / "model" / "finest.tar"
    for source in (checkpoint, FIXTURE / "humanml3d", str(FIXTURE)):
        other = ev.T2MEvaluator.from_pretrained(source)
        for (name, a), (_, b) in zip(evaluator.state_dict().items(), other.state_dict().items()):
            assert torch.equal(a, b), name


def test_co_embeddings_match_the_authors_wrapper(case, evaluator):
    tensors, _ = case
    out = evaluator.get_co_embeddings(*inputs(case))
    torch.testing.assert_close(out.order, tensors["evaluator.out.align_idx"], rtol=0, atol=0)
    assert_rows_close(out.text_embeddings, tensors["evaluator.out.text_embedding"])
    assert_rows_close(out.motion_embeddings, tensors["evaluator.out.motion_embedding"])


def test_intermediate_outputs_match(case, evaluator):
    tensors, _ = case
    word_embs, pos_ohot, cap_lens, motions, m_lens = inputs(case)
    order = tensors["evaluator.out.align_idx"]
    with torch.no_grad():
        movements = evaluator.movement_encoder(motions[order][..., :-4])
    assert_rows_close(movements, tensors["evaluator.out.movements"])
    assert_rows_close(
        evaluator.encode_text(word_embs, pos_ohot, cap_lens), tensors["evaluator.out.text_embedding_input_order"]
    )
    motion_only = evaluator.get_motion_embeddings(motions, m_lens)
    assert motion_only.text_embeddings is None
    assert torch.equal(motion_only.order, order)
    assert_rows_close(motion_only.motion_embeddings, tensors["evaluator.out.motion_embedding_only"])


def test_output_order_does_not_depend_on_input_order(case, evaluator):
    tensors, _ = case
    word_embs, pos_ohot, cap_lens, motions, m_lens = inputs(case)
    shuffle = torch.randperm(len(m_lens), generator=torch.Generator().manual_seed(0))
    out = evaluator.get_co_embeddings(
        word_embs[shuffle], pos_ohot[shuffle], cap_lens[shuffle], motions[shuffle], m_lens[shuffle]
    )
    assert torch.equal(shuffle[out.order], tensors["evaluator.out.align_idx"])
    assert_rows_close(out.text_embeddings, tensors["evaluator.out.text_embedding"])
    assert_rows_close(out.motion_embeddings, tensors["evaluator.out.motion_embedding"])


def test_ties_in_motion_length_keep_input_order():
    m_lens = torch.tensor([40, 80, 40, 80, 60])
    assert ev.T2MEvaluator.length_order(m_lens).tolist() == [1, 3, 4, 0, 2]


def test_padding_tokens_are_ignored(case, evaluator):
    word_embs, pos_ohot, cap_lens, _, _ = inputs(case)
    noisy = word_embs.clone()
    for row, length in enumerate(cap_lens.tolist()):
        noisy[row, length:] += 5.0
    torch.testing.assert_close(
        evaluator.encode_text(noisy, pos_ohot, cap_lens), evaluator.encode_text(word_embs, pos_ohot, cap_lens)
    )


def test_evaluator_statistics_are_the_upstream_files(evaluator):
    for dataset, prefix, dims in (("humanml3d", "t2m", 263), ("kit-ml", "kit", 251)):
        mean, std = ev.load_evaluator_stats(dataset)
        assert mean.shape == std.shape == (dims,) and mean.dtype == np.float64
        np.testing.assert_array_equal(mean, np.load(SHARED / "t2m_evaluator_meta" / f"{prefix}_mean.npy"))
        np.testing.assert_array_equal(std, np.load(SHARED / "t2m_evaluator_meta" / f"{prefix}_std.npy"))
    raw = np.load(SHARED / "humanml3d_sample" / "new_joint_vecs" / "012314.npy")
    mean, std = ev.load_evaluator_stats("humanml3d")
    normalized = evaluator.normalize(raw)
    assert normalized.dtype == torch.float32
    np.testing.assert_array_equal(normalized.numpy(), ((raw.astype(np.float64) - mean) / std).astype(np.float32))
    dataset_mean = np.load(SHARED / "humanml3d_sample" / "Mean.npy")
    assert np.abs(dataset_mean - mean).max() > 1e-3, "evaluator and dataset statistics must not be confused"


@pytest.fixture(scope="module")
def glove_folder(tmp_path_factory):
    """The real GloVe vocabulary files with synthetic vectors (the real vectors are not available offline)."""
    folder = tmp_path_factory.mktemp("glove")
    for name in ("our_vab_words.pkl", "our_vab_idx.pkl"):
        (folder / name).write_bytes((SHARED / "glove_vocab" / name).read_bytes())
    words = pickle.loads((SHARED / "glove_vocab" / "our_vab_words.pkl").read_bytes())
    vectors = np.random.default_rng(0).normal(size=(len(words), 300)).astype(np.float32)
    np.save(folder / "our_vab_data.npy", vectors)
    return folder, words, vectors


def test_word_vectorizer_follows_the_pos_rules(glove_folder):
    folder, words, vectors = glove_folder
    vectorizer = ev.WordVectorizer.from_pretrained(folder)
    assert len(vectorizer) == len(words)
    index = {word: i for i, word in enumerate(words)}
    category = {name: np.eye(15)[i] for name, i in ev.POS_CATEGORIES.items()}
    for token, word, pos in (
        ("person/NOUN", "person", "NOUN"),
        ("right/ADJ", "right", "Loc_VIP"),
        ("hand/NOUN", "hand", "Body_VIP"),
        ("walk/VERB", "walk", "Act_VIP"),
        ("to/PART", "to", "OTHER"),
        ("qwertyuiop/NOUN", "unk", "OTHER"),
    ):
        vector, one_hot = vectorizer[token]
        np.testing.assert_array_equal(vector, vectors[index[word]])
        np.testing.assert_array_equal(one_hot, category[pos])
    with pytest.raises(ValueError, match="word/POS"):
        vectorizer["walk"]


def test_captions_are_framed_padded_and_cut(glove_folder, evaluator):
    folder, words, vectors = glove_folder
    vectorizer = ev.WordVectorizer.from_pretrained(folder)
    index = {word: i for i, word in enumerate(words)}
    lines = (SHARED / "humanml3d_sample" / "texts" / "012314.txt").read_text().splitlines()
    token_lists = [line.split("#")[1].split(" ") for line in lines]
    short = token_lists[1]
    word_embs, pos_ohot, length = vectorizer.encode(short)
    assert word_embs.shape == (ev.MAX_TEXT_LEN + 2, 300) and pos_ohot.shape == (ev.MAX_TEXT_LEN + 2, 15)
    assert length == len(short) + 2
    np.testing.assert_array_equal(word_embs[0], vectors[index["sos"]])
    np.testing.assert_array_equal(word_embs[length - 1], vectors[index["eos"]])
    np.testing.assert_array_equal(word_embs[length:], np.broadcast_to(vectors[index["unk"]], (22 - length, 300)))
    assert (pos_ohot[length:, ev.POS_CATEGORIES["OTHER"]] == 1).all()

    long = token_lists[0] * 2
    word_embs, _, length = vectorizer.encode(long)
    assert length == ev.MAX_TEXT_LEN + 2
    np.testing.assert_array_equal(word_embs[1:-1], np.stack([vectorizer[t][0] for t in long[: ev.MAX_TEXT_LEN]]))
    np.testing.assert_array_equal(word_embs[-1], vectors[index["eos"]])

    batch = vectorizer.encode_batch(token_lists)
    assert batch[0].dtype == torch.float32 and batch[2].tolist() == [len(t) + 2 for t in token_lists]
    text_embeddings = evaluator.encode_text(*batch)
    assert text_embeddings.shape == (len(token_lists), 512) and torch.isfinite(text_embeddings).all()
    with pytest.raises(TypeError, match="split it first"):
        vectorizer.encode("a/DET man/NOUN")


def test_vocabulary_pickles_cannot_run_code(glove_folder, tmp_path):
    folder, _, _ = glove_folder
    for name in ("our_vab_data.npy", "our_vab_idx.pkl"):
        (tmp_path / name).write_bytes((folder / name).read_bytes())
    (tmp_path / "our_vab_words.pkl").write_bytes(pickle.dumps(Path("/etc")))
    with pytest.raises(pickle.UnpicklingError, match="Refusing"):
        ev.WordVectorizer.from_pretrained(tmp_path)


def test_missing_files_say_where_to_get_them(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(FileNotFoundError, match="download_evaluators.sh"):
        ev.T2MEvaluator.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="download_evaluators.sh"):
        ev.T2MEvaluator.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="download_evaluators.sh"):
        ev.T2MEvaluator.from_pretrained("nobody-here/no-evaluator")
    with pytest.raises(FileNotFoundError, match="download_glove.sh"):
        ev.WordVectorizer.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="download_glove.sh"):
        ev.WordVectorizer.from_pretrained("./no/glove/here")


def test_hub_repositories_resolve_through_snapshot_download(monkeypatch, evaluator):
    import huggingface_hub

    calls = []

    def fake_snapshot_download(repo_id, revision=None, allow_patterns=None):
        calls.append((repo_id, revision, allow_patterns))
        return str(FIXTURE)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    loaded = ev.T2MEvaluator.from_pretrained("someone/t2m-evaluator", revision="main")
    assert calls[0][:2] == ("someone/t2m-evaluator", "main")
    assert "humanml3d/text_mot_match/model/finest.tar" in calls[0][2]
    assert torch.equal(loaded.text_encoder.hidden, evaluator.text_encoder.hidden)


def test_not_an_evaluator_checkpoint(tmp_path):
    torch.save({"epoch": 0, "model": {}}, tmp_path / "finest.tar")
    with pytest.raises(ValueError, match="lacks"):
        ev.T2MEvaluator.from_pretrained(tmp_path / "finest.tar")
    with pytest.raises(ValueError, match="dataset"):
        ev.T2MEvaluator.from_pretrained(FIXTURE, dataset="amass")
    with pytest.raises(ValueError, match="does not match the kit-ml evaluator statistics"):
        ev.T2MEvaluator.from_pretrained(FIXTURE / "humanml3d", dataset="kit-ml")


def test_bad_motion_and_caption_inputs(case, evaluator):
    word_embs, pos_ohot, cap_lens, motions, m_lens = inputs(case)
    with pytest.raises(ValueError, match="motions"):
        evaluator.get_co_embeddings(word_embs, pos_ohot, cap_lens, motions[..., :251], m_lens)
    too_long = m_lens.clone()
    too_long[0] = motions.shape[1] + 4
    with pytest.raises(ValueError, match="motion length"):
        evaluator.get_motion_embeddings(motions, too_long)
    with pytest.raises(ValueError, match="m_lens"):
        evaluator.get_motion_embeddings(motions, m_lens[:-1])
    with pytest.raises(ValueError, match="captions"):
        evaluator.get_co_embeddings(word_embs[:-1], pos_ohot[:-1], cap_lens[:-1], motions, m_lens)
    with pytest.raises(ValueError, match="cap_lens"):
        evaluator.encode_text(word_embs, pos_ohot, cap_lens + 5)
    with pytest.raises(ValueError, match="last dimension"):
        evaluator.normalize(np.zeros((10, 251)))

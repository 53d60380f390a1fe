"""The evaluators as the protocol uses them: the T2M co-embedder keeps the input order, and loads from files."""

import numpy as np
import pytest
import torch

from moscale.evaluation.co_embedders import T2MCoEmbedder, load_co_embedder
from moscale.evaluation.protocol import evaluate_repeat, load_batch
from moscale.evaluation.t2m_evaluator import T2MEvaluator, WordVectorizer
from tests.helpers import CAPTIONS, perfect_generator, protocol_settings, save_tiny_t2m_files


def test_t2m_co_embedder_keeps_input_order(workspace):
    torch.manual_seed(0)
    evaluator = T2MEvaluator(dim_word=8, dim_text_hidden=16, dim_motion_hidden=16, dim_movement_enc_hidden=16,
                             dim_movement_latent=16, dim_coemb_hidden=8)  # fmt: skip
    words = ["sos", "eos", "unk"] + sorted({t.split("/")[0] for _, tokens in CAPTIONS for t in tokens.split()})
    vectors = np.random.default_rng(0).normal(size=(len(words), 8))
    vectorizer = WordVectorizer(vectors, words, {word: index for index, word in enumerate(words)})
    embed = T2MCoEmbedder(evaluator, vectorizer)
    data = load_batch(workspace["rows"], np.arange(8), 3, 0, 0)
    text, motion = embed(data.captions, data.tokens, data.motions, data.lengths, zero_padding=True)
    assert text.shape == motion.shape == (8, 8)
    for row in range(8):  # each row alone gives the same embedding: rows were put back in input order
        one = slice(row, row + 1)
        one_text, one_motion = embed(data.captions[one], data.tokens[one], data.motions[one], data.lengths[one], True)
        np.testing.assert_allclose(one_text[0], text[row], atol=1e-5)
        np.testing.assert_allclose(one_motion[0], motion[row], atol=1e-5)
    # With zero padding the generated motions reach the evaluator exactly as the real ones do.
    settings = protocol_settings(generated_padding="zeros")
    rows = workspace["rows"]
    result = evaluate_repeat(rows, settings, 0, embed, perfect_generator(rows, settings, 0))
    assert result["top1"] == pytest.approx(result["real_top1"], abs=1e-6) and abs(result["fid"]) < 1e-5
    # With "decoder" padding the raw frames past each length (zeros here, decoder output for a model) are used as
    # given: the T2M convolutions see them at the end of each motion, so the embeddings move slightly.
    decoder = evaluate_repeat(rows, protocol_settings(), 0, embed, perfect_generator(rows, settings, 0))
    assert decoder["fid"] > 10 * abs(result["fid"])


def test_load_t2m_evaluator_from_files(workspace, tmp_path):
    """--evaluator t2m: finest.tar (weights_only) and GloVe files in the standard layout, tiny random weights."""
    evaluator, words, vectors = save_tiny_t2m_files(tmp_path)
    loaded = load_co_embedder("t2m", str(tmp_path / "checkpoint_dir"), str(tmp_path / "glove"), "humanml3d", "cpu")
    direct = T2MCoEmbedder(evaluator, WordVectorizer(vectors, words, {w: i for i, w in enumerate(words)}))
    data = load_batch(workspace["rows"], np.arange(8), 3, 0, 0)
    for got, want in zip(loaded(data.captions, data.tokens, data.motions, data.lengths, True),
                         direct(data.captions, data.tokens, data.motions, data.lengths, True)):  # fmt: skip
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="--glove_path"):
        load_co_embedder("t2m", str(tmp_path / "checkpoint_dir"), None, "humanml3d", "cpu")
    with pytest.raises(FileNotFoundError, match="download_evaluators"):
        load_co_embedder("t2m", str(tmp_path / "glove"), str(tmp_path / "glove"), "humanml3d", "cpu")

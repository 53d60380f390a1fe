"""The evaluators the protocol embeds texts and motions with, as `CoEmbedder`s: the standard T2M evaluator, or a
contrastive evaluator trained on other data; `load_co_embedder` builds the one `moscale evaluate --evaluator` names.

- ``t2m``: the standard T2M evaluator (`moscale.evaluation.t2m_evaluator`, `finest.tar` + GloVe); the numbers compare
  with the paper's tables.
- ``contrastive``: a `moscale.evaluation.contrastive_evaluator` model trained with `examples/train_evaluator.py`, for
  data without the standard evaluator; its numbers compare only with runs using the same evaluator weights.
"""

from __future__ import annotations

import torch

from moscale.evaluation.protocol import CoEmbedder
from moscale.motion.data import MAX_MOTION_LENGTH


class T2MCoEmbedder:
    """The standard T2M evaluator: GloVe + POS text encoder, motions normalised with the evaluator's statistics."""

    def __init__(self, evaluator, word_vectorizer, max_motion_length: int = MAX_MOTION_LENGTH):
        self.evaluator = evaluator
        self.word_vectorizer = word_vectorizer
        self.max_motion_length = max_motion_length

    def __call__(self, captions, tokens, motions, lengths, zero_padding):
        lengths = torch.as_tensor(lengths, dtype=torch.long).cpu()
        normalized_BND = self.evaluator.normalize(motions)
        if zero_padding:
            inside_BN = torch.arange(normalized_BND.shape[1], device=normalized_BND.device)[None] < lengths[:, None].to(
                normalized_BND.device
            )
            normalized_BND = normalized_BND * inside_BN[..., None]
        # The authors pad every motion to 196 frames; the evaluator's output does not depend on it, but the
        # convolutions then see the same inputs as theirs.
        missing = self.max_motion_length - normalized_BND.shape[1]
        if missing > 0:
            normalized_BND = torch.nn.functional.pad(normalized_BND, (0, 0, 0, missing))
        word_embs, pos_ohot, cap_lens = self.word_vectorizer.encode_batch(tokens)
        embeddings = self.evaluator.get_co_embeddings(word_embs, pos_ohot, cap_lens, normalized_BND, lengths)
        # Back to the input order; the protocol applies the evaluator's length order itself.
        inverse = torch.argsort(embeddings.order)
        return (
            embeddings.text_embeddings[inverse.to(embeddings.text_embeddings.device)].cpu().numpy(),
            embeddings.motion_embeddings[inverse.to(embeddings.motion_embeddings.device)].cpu().numpy(),
        )


class ContrastiveCoEmbedder:
    """A trained `ContrastiveEvaluatorModel` (it normalises raw motions and ignores frames past each length)."""

    def __init__(self, model):
        self.model = model.eval()

    def __call__(self, captions, tokens, motions, lengths, zero_padding):
        text_BE, motion_BE = self.model.get_co_embeddings(list(captions), motions, lengths)
        return text_BE.cpu().numpy(), motion_BE.cpu().numpy()


def load_co_embedder(kind: str, path: str | None, glove_path: str | None, dataset: str, device) -> CoEmbedder:
    """Builds the evaluator named on the command line (see the module docstring)."""
    if kind == "t2m":
        from moscale.evaluation.t2m_evaluator import T2MEvaluator, WordVectorizer

        if path is None or glove_path is None:
            raise ValueError("--evaluator t2m needs --evaluator_path (finest.tar or its folder) and --glove_path.")
        evaluator = T2MEvaluator.from_pretrained(path, dataset=dataset, device=device)
        return T2MCoEmbedder(evaluator, WordVectorizer.from_pretrained(glove_path))
    if kind == "contrastive":
        from moscale.evaluation.contrastive_evaluator import ContrastiveEvaluatorModel

        if path is None:
            raise ValueError("--evaluator contrastive needs --evaluator_path (a train_evaluator.py output folder).")
        return ContrastiveCoEmbedder(ContrastiveEvaluatorModel.from_pretrained(path).to(device))
    raise ValueError(f"--evaluator must be 't2m' or 'contrastive', got {kind!r}.")

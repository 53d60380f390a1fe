"""MultiModality of repeated generations, the way the HumanML3D / KIT-ML protocol computes it.

A thin `evaluate` wrapper over `moscale.evaluation.metrics.multimodality`; see docs/evaluation.md in the moscale repository.
"""

import datasets
import evaluate
import numpy as np

from moscale.evaluation import metrics

_DESCRIPTION = """
MultiModality: for each text, R motions are generated (30 in the protocol, for the texts of the first 3 batches);
`times` column pairs (10 in the protocol) are drawn once with `numpy.random.RandomState(seed)` and used for every
text; the result is the mean Euclidean distance between the paired generations' co-embeddings.
"""

_KWARGS_DESCRIPTION = """
Args:
    embeddings: one entry per text: the R motion co-embeddings (R lists of floats) of its generations; every text
        must have the same R, and R must exceed `times`.
    seed: int, required: the seed of the random pairs.
    times: number of pairs, 10 in the protocol.
Returns:
    multimodality: float.
Example:
    >>> multimodality = evaluate.load("./metrics/multimodality")
    >>> multimodality.compute(embeddings=generations_per_text, seed=0)
"""

_CITATION = """
@inproceedings{guo2022generating,
  title={Generating Diverse and Natural 3D Human Motions from Text},
  author={Guo, Chuan and Zou, Shihao and Zuo, Xinxin and Wang, Sen and Ji, Wei and Li, Xingyu and Cheng, Li},
  booktitle={CVPR},
  year={2022}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MultiModality(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"embeddings": datasets.Sequence(datasets.Sequence(datasets.Value("float32")))}),
        )

    def _compute(self, embeddings, seed=None, times=10):
        if seed is None:
            raise ValueError(
                "MultiModality draws random pairs: pass `seed=<int>` to compute() to make it reproducible."
            )
        if len({len(generations) for generations in embeddings}) > 1:
            raise ValueError("Every text must have the same number of generations.")
        embeddings = np.asarray(embeddings, dtype=np.float32)
        return {"multimodality": float(metrics.multimodality(embeddings, rng=seed, times=times))}

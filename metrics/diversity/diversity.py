"""Diversity of motion co-embeddings, the way the HumanML3D / KIT-ML protocol computes it.

A thin `evaluate` wrapper over `moscale.evaluation.metrics.diversity`; see docs/evaluation.md in the moscale repository.
"""

import datasets
import evaluate
import numpy as np

from moscale.evaluation import metrics

_DESCRIPTION = """
Diversity: the mean Euclidean distance between `times` random pairs of motion co-embeddings. The two index sets are
drawn with `numpy.random.RandomState(seed).choice(N, times, replace=False)`, one after the other, which reproduces the
reference code after `np.random.seed(seed)`. `times` defaults to the protocol's rule: 300 if N > 300, else 100.
"""

_KWARGS_DESCRIPTION = """
Args:
    embeddings: motion co-embeddings (lists of floats), in the evaluator's output order.
    seed: int, required: the seed of the random pairs.
    times: number of pairs (default: 300 if there are more than 300 rows, else 100). Needs more rows than pairs.
Returns:
    diversity: float.
Example:
    >>> diversity = evaluate.load("./metrics/diversity")
    >>> diversity.compute(embeddings=motion_rows, seed=0)
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
class Diversity(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"embeddings": datasets.Sequence(datasets.Value("float32"))}),
        )

    def _compute(self, embeddings, seed=None, times=None):
        if seed is None:
            raise ValueError("Diversity draws random pairs: pass `seed=<int>` to compute() to make it reproducible.")
        embeddings = np.asarray(embeddings, dtype=np.float32)
        times = metrics.diversity_times(len(embeddings)) if times is None else times
        return {"diversity": float(metrics.diversity(embeddings, times, rng=seed))}

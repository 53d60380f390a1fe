"""MM-Dist (matching score) of text-to-motion co-embeddings, the way the HumanML3D / KIT-ML protocol computes it.

A thin `evaluate` wrapper over `moscale.evaluation.metrics.matching_score`; see docs/evaluation.md in the moscale repository.
"""

import datasets
import evaluate
import numpy as np

from moscale.evaluation import metrics

_DESCRIPTION = """
MM-Dist: the mean Euclidean distance between each text co-embedding and its motion's co-embedding. As in the
standard protocol, the distances are summed per batch of `batch_size` rows in float32, then over batches, and divided
by the number of rows, which must be a multiple of `batch_size`.
"""

_KWARGS_DESCRIPTION = """
Args:
    text_embeddings: one text co-embedding (list of floats) per row, from the T2M evaluator.
    motion_embeddings: the motion co-embedding that goes with each text, same order.
    batch_size: 32 in the standard protocol.
Returns:
    mm_dist: float.
Example:
    >>> mm_dist = evaluate.load("./metrics/mm_dist")
    >>> mm_dist.compute(text_embeddings=text_rows, motion_embeddings=motion_rows)
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
class MMDist(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "text_embeddings": datasets.Sequence(datasets.Value("float32")),
                    "motion_embeddings": datasets.Sequence(datasets.Value("float32")),
                }
            ),
        )

    def _compute(self, text_embeddings, motion_embeddings, batch_size=32):
        value = metrics.matching_score(
            np.asarray(text_embeddings, dtype=np.float32),
            np.asarray(motion_embeddings, dtype=np.float32),
            batch_size=batch_size,
        )
        return {"mm_dist": float(value)}

"""R-precision of text-to-motion co-embeddings, the way the HumanML3D / KIT-ML protocol computes it.

A thin `evaluate` wrapper over `moscale.evaluation.metrics.r_precision`; see docs/evaluation.md in the moscale repository.
"""

import datasets
import evaluate
import numpy as np

from moscale.evaluation import metrics

_DESCRIPTION = """
R-precision (top-1, top-2, top-3): rows are taken in batches of `batch_size` (32 in the standard protocol); within a
batch every text ranks the batch's motions by Euclidean distance, and a hit is its own motion among the first k.
Hits are summed over batches and divided by the number of rows. Give the rows in loader order; their number must be
a multiple of `batch_size` (the standard loader drops the last partial batch).
"""

_KWARGS_DESCRIPTION = """
Args:
    text_embeddings: one text co-embedding (list of floats) per row, from the T2M evaluator.
    motion_embeddings: the motion co-embedding that goes with each text, same order.
    batch_size: gallery size, 32 in the standard protocol.
    top_k: largest k reported, 3 in the standard protocol.
    distance: "euclidean" (standard) or "cosine".
Returns:
    top1 ... top{top_k}: float R-precision values.
Example:
    >>> r_precision = evaluate.load("./metrics/r_precision")
    >>> r_precision.compute(text_embeddings=text_rows, motion_embeddings=motion_rows)
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
class RPrecision(evaluate.Metric):
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

    def _compute(self, text_embeddings, motion_embeddings, batch_size=32, top_k=3, distance="euclidean"):
        values = metrics.r_precision(
            np.asarray(text_embeddings, dtype=np.float32),
            np.asarray(motion_embeddings, dtype=np.float32),
            batch_size=batch_size,
            top_k=top_k,
            distance=distance,
        )
        return {f"top{k + 1}": float(value) for k, value in enumerate(values)}

"""FID between real and generated motion co-embeddings, the way the HumanML3D / KIT-ML protocol computes it.

A thin `evaluate` wrapper over `moscale.evaluation.metrics.fid`; see docs/evaluation.md in the moscale repository.
"""

import datasets
import evaluate
import numpy as np

from moscale.evaluation import metrics

_DESCRIPTION = """
FID: the Frechet distance between Gaussians fitted to the real and to the generated motion co-embeddings
(float32 means, unbiased float64 covariances, scipy's sqrtm; see moscale.evaluation.metrics.frechet_distance).
`evaluate` needs one prediction per reference, so both sets must have the same number of rows, as in the protocol.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: motion co-embeddings (lists of floats) of the generated motions.
    references: motion co-embeddings of the real motions.
Returns:
    fid: float.
Example:
    >>> fid = evaluate.load("./metrics/fid")
    >>> fid.compute(predictions=generated_rows, references=real_rows)
"""

_CITATION = """
@inproceedings{heusel2017gans,
  title={GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium},
  author={Heusel, Martin and Ramsauer, Hubert and Unterthiner, Thomas and Nessler, Bernhard and Hochreiter, Sepp},
  booktitle={NeurIPS},
  year={2017}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MotionFID(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float32")),
                    "references": datasets.Sequence(datasets.Value("float32")),
                }
            ),
        )

    def _compute(self, predictions, references):
        value = metrics.fid(np.asarray(references, dtype=np.float32), np.asarray(predictions, dtype=np.float32))
        return {"fid": float(value)}

import numpy as np
import pytest
import torch

from moscale.evaluation.contrastive_evaluator import ContrastiveEvaluatorModel
from moscale.motion.data import load_motion_dataset
from tests.helpers import NUM_TEST_ITEMS, make_motion_folder, tiny_contrastive_config, tiny_pipeline


@pytest.fixture(scope="session")
def workspace(tmp_path_factory):
    """A tiny test split, a tiny contrastive evaluator trained on nothing, and a tiny pipeline, saved once."""
    root = tmp_path_factory.mktemp("evaluate")
    data = make_motion_folder(root / "data", {"test": NUM_TEST_ITEMS})
    torch.manual_seed(0)
    evaluator = ContrastiveEvaluatorModel(tiny_contrastive_config())
    evaluator.set_feature_statistics(np.load(data / "Mean.npy"), np.load(data / "Std.npy"))
    evaluator.save_pretrained(root / "evaluator")
    tiny_pipeline(sample_steps_per_scale=(1, 1, 1, 1)).save_pretrained(root / "pipeline")
    rows = load_motion_dataset(data, "test", cache_dir=root / "cache")
    return {"root": root, "data": data, "rows": rows.with_format("numpy", columns=["motion"], output_all_columns=True)}

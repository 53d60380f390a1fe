"""Where the tests find the real data: `../shared/data` beside the repository, each folder overridable.

MOSCALE_SHARED_DATA moves the whole folder; MOSCALE_HUMANML3D_SAMPLE, MOSCALE_PARITY_FIXTURE and
MOSCALE_METRICS_FIXTURE point one test family at another clip folder, parity fixture or metrics reference case.
"""

import json
import os
from pathlib import Path

import pytest
import safetensors.numpy
import safetensors.torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MOSCALE_SHARED_DATA", ROOT.parent / "shared" / "data"))
HUMANML3D_SAMPLE = Path(os.environ.get("MOSCALE_HUMANML3D_SAMPLE", SHARED_DATA / "humanml3d_sample"))
PARITY_FIXTURE = Path(os.environ.get("MOSCALE_PARITY_FIXTURE", SHARED_DATA / "parity" / "fixture_a"))
METRICS_FIXTURE = Path(os.environ.get("MOSCALE_METRICS_FIXTURE", SHARED_DATA / "metrics_reference"))
BVH_DIR = SHARED_DATA / "bvh"
SHARED_BVH_FILES = {  # name: (file fps, frames at 20 fps, detected mapping)
    "cmu_01_01": (120.0, 459, "cmu"),
    "cmu_jumping_jacks": (30.0, 83, "cmu-anatomical"),
    "wave_hello": (119.88, 140, "mixamo"),
}


def load_metrics_case(as_torch: bool = False) -> tuple[dict, dict]:
    """The metrics reference case: its tensors (numpy arrays, or torch tensors) and its meta.json."""
    if not (METRICS_FIXTURE / "case.safetensors").is_file():
        pytest.fail(f"Metrics reference folder not found at {METRICS_FIXTURE} (set MOSCALE_METRICS_FIXTURE).")
    load_file = safetensors.torch.load_file if as_torch else safetensors.numpy.load_file
    return load_file(METRICS_FIXTURE / "case.safetensors"), json.loads((METRICS_FIXTURE / "meta.json").read_text())

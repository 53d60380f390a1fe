"""A procedural text-motion dataset with exact ground truth, and detectors that read actions back from joints.

`generate_clip` plays 1 to 3 actions (walking, running, side steps, jumps, turns, waves, squats, kicks, raising
both arms, standing still) on a body with the HumanML3D skeleton; `make_captions` describes them;
`write_dataset` (or ``python -m moscale.synthetic``) writes a HumanML3D-layout folder with `semantics.jsonl`;
`detect` reads the actions back from joints `(T, 22, 3)` of any motion.
"""

from .actions import VOCABULARY, Action
from .captions import caption_line, make_captions
from .detectors import DetectedAction, Detection, detect
from .generator import Clip, generate_clip, sample_plan
from .writer import make_example, write_dataset

__all__ = [
    "VOCABULARY",
    "Action",
    "Clip",
    "DetectedAction",
    "Detection",
    "caption_line",
    "detect",
    "generate_clip",
    "make_captions",
    "make_example",
    "sample_plan",
    "write_dataset",
]

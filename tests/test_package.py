import configparser
from pathlib import Path

import moscale

ROOT = Path(__file__).resolve().parents[1]


def test_version_matches_setup_cfg():
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    assert parser["metadata"]["version"] == moscale.__version__

import configparser
from pathlib import Path

import moscale

ROOT = Path(__file__).resolve().parents[1]


def test_version_matches_setup_cfg():
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    assert parser["metadata"]["version"] == moscale.__version__


def test_the_architecture_map_names_every_module():
    """docs/architecture.md opens with a map of the package: every module and folder has its line."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    the_map = text[text.index("## Map of the package") : text.index("## The two models")]
    package = ROOT / "moscale"
    names = {path.name for path in package.rglob("*.py") if path.name != "__init__.py"}
    names |= {f"{path.name}/" for path in package.iterdir() if path.is_dir() and path.name != "__pycache__"}
    missing = sorted(name for name in names if name not in the_map)
    assert not missing, f"docs/architecture.md's map lacks {missing}"

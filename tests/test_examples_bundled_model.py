"""examples/bundled_model/compare_text_encoders.py on a small procedural folder, with and without a pipeline."""

import pytest

from moscale.synthetic import write_dataset
from tests.helpers import load_script, tiny_pipeline


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("procedural")
    write_dataset(folder, num_clips=150, seed=4)
    return folder


def test_compare_text_encoders_reports_every_unseen_phrasing_and_each_representation(dataset, tmp_path, capsys):
    script = load_script("compare_text_encoders", "examples/bundled_model")
    tiny_pipeline().save_pretrained(tmp_path / "pipeline")
    script.main(["--data_dir", str(dataset), "--model", str(tmp_path / "pipeline")])
    printed = capsys.readouterr().out
    rows = [line for line in printed.splitlines() if line.startswith("| ") and not line.startswith("| category")]
    phrasings = sum(len(items) for items in script._unseen_templates().values())
    assert len(rows) == phrasings + 1  # the table's rule line, then one row per unseen phrasing
    summaries = [line for line in printed.splitlines() if "lie farther from every training caption" in line]
    assert [line.split(":")[0] for line in summaries] == ["pretrained encoder, pooled", "transformer's text condition"]
    assert all(f"of {phrasings} (" in line for line in summaries)

"""examples/bundled_model/compare_text_encoders.py on a small procedural folder, with and without a pipeline."""

import re

import pytest
import torch

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
    probes = [line for line in printed.splitlines() if line.startswith("linear probes on ")]
    assert [line.split(",")[0] for line in probes] == [
        "linear probes on pretrained encoder",
        "linear probes on transformer's text condition",
    ]
    for line in probes:
        scores = re.findall(r"(counted action and count|turn direction|waving hand|travel direction) (\d+)/(\d+)", line)
        assert [fact for fact, _, _ in scores] == list(script.PROBED_FACTS)
        assert all(int(right) <= int(scored) for _, right, scored in scores)
        assert 0 < int(scores[1][2]) <= 6  # of the 6 unseen turn phrasings, those whose direction training has


def test_a_linear_probe_reads_the_feature_that_carries_a_fact():
    script = load_script("compare_text_encoders", "examples/bundled_model")
    generator = torch.Generator().manual_seed(0)
    labels = ["left", "right"] * 50
    features = torch.randn(100, 8, generator=generator)
    features[:, 3] += torch.tensor([-3.0 if label == "left" else 3.0 for label in labels])
    test = torch.randn(5, 8, generator=generator)
    test[:, 3] = torch.tensor([-3.0, 3.0, -3.0, 3.0, 0.0])
    test_labels = ["left", "right", "left", "right", "up"]
    assert script.probe_accuracy(features, labels, test, test_labels) == (4, 4)  # "up" is no trained class
    assert script.probe_accuracy(features, labels, -test, test_labels) == (0, 4)  # the sign is what it reads

"""Guidance tuning on the validation split: the same numbers as prompt_following, the winner's rule, --write."""

import json

import pytest

from moscale import MoScalePipeline
from moscale.evaluation import prompt_following as pf
from moscale.evaluation import tune_guidance as tg
from moscale.synthetic import write_dataset
from tests.helpers import tiny_pipeline


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("procedural")
    write_dataset(folder, num_clips=200, seed=5)
    return folder


def test_the_best_scale_on_val_is_chosen_as_prompt_following_scores_it_and_written(dataset, tmp_path):
    folder = tmp_path / "pipeline"
    tiny_pipeline().save_pretrained(folder)
    common = ["--data_dir", str(dataset), "--model", str(folder), "--samples_per_category", "3"]
    categories = ["--categories", "turn_direction", "travel_direction"]
    tg.main([*common, *categories, "--guidance_scales", "2", "0", "--output_dir", str(tmp_path / "tuned"), "--write"])
    result = json.loads((tmp_path / "tuned" / "result.json").read_text())
    means = {float(scale): value for scale, value in result["mean_agreement"].items()}
    assert list(means) == [2.0, 0.0]
    assert result["best"] == max(sorted(means), key=means.get)  # ties go to the lower scale
    table = (tmp_path / "tuned" / "table.md").read_text()
    assert "| guidance 2 | guidance 0 |" in table and "| mean |" in table

    pf.main(
        [
            *common,
            *categories,
            "--split",
            "val",
            "--split_only",
            "--guidance_scale",
            "2",
            "--output_dir",
            str(tmp_path / "pf"),
        ]
    )
    scored = json.loads((tmp_path / "pf" / "result.json").read_text())["sets"]["val_split"]["categories"]
    assert scored == result["scales"]["2.0"]["categories"]

    for name in tg.CONFIGS_WITH_GUIDANCE:
        assert json.loads((folder / name).read_text())["guidance_scale"] == result["best"]
    assert MoScalePipeline.from_pretrained(folder).scheduler.config.guidance_scale == result["best"]


def test_negative_scales_and_folders_without_configs_are_refused(tmp_path):
    with pytest.raises(SystemExit):
        tg.main(["--data_dir", str(tmp_path), "--model", str(tmp_path), "--guidance_scales", "-1"])
    with pytest.raises(FileNotFoundError, match="pass a pipeline folder written by save_pretrained"):
        tg.write_default_guidance(tmp_path, 2.0)

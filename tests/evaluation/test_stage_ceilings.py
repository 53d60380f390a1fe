"""Stage ceilings: the clips read back exactly, forced codes are kept, and forcing every scale decodes the clip's codes."""

import pytest
import torch

from moscale.evaluation import stage_ceilings as sc
from moscale.synthetic import write_dataset
from tests.helpers import tiny_pipeline


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("procedural")
    write_dataset(folder, num_clips=120, seed=7)
    return folder


def test_forced_scales_keep_the_given_codes_and_all_forced_decodes_them(dataset):
    pipe = tiny_pipeline()
    items = sc.test_split_prompts(dataset, 3, seed=0, categories=("order_2",))["order_2"]
    lengths_B = torch.tensor([sc.valid_num_frames(pipe, item["num_frames"]) for item in items])
    _, normalized_BND = sc._load_clips(pipe, dataset, [item["clip_id"] for item in items], lengths_B)
    with torch.no_grad():
        codes = pipe.vq_model.encode(normalized_BND, lengths_B).codes
    prompts = [item["prompt"] for item in items]

    free = sc.generate_with_forced_codes(pipe, prompts, lengths_B, codes, 0, torch.Generator().manual_seed(0))
    two = sc.generate_with_forced_codes(pipe, prompts, lengths_B, codes, 2, torch.Generator().manual_seed(0))
    assert all(torch.equal(two.tokens[k], codes[k]) for k in range(2))
    assert not torch.equal(free.tokens[0], codes[0])  # a random transformer does not sample the clip's codes
    every = sc.generate_with_forced_codes(pipe, prompts, lengths_B, codes, 4, torch.Generator().manual_seed(0))
    torch.testing.assert_close(every.features, pipe.decode_tokens(codes, lengths_B))


def test_table_has_every_stage_and_the_data_column_reads_the_generator_exactly(dataset):
    pipe = tiny_pipeline()
    categories = ("order_2", "travel_direction")
    table = sc.stage_agreement(
        pipe, dataset, split="test", samples=2, seed=0, categories=categories, refinement_steps=(1, 1, 1, 1)
    )
    assert list(table) == list(categories)
    for row in table.values():
        assert list(row) == [
            "data",
            "latent",
            "tokenizer",
            "from_scale_0",
            "from_scale_1",
            "from_scale_2",
            "from_scale_3",
        ]
        assert row["data"] == 1.0
        assert all(0.0 <= value <= 1.0 for value in row.values())
    assert "| order_2 | 100% |" in sc.format_table(table)


def test_command_judges_another_tokenizer_without_sampling(dataset, tmp_path):
    import json

    pipe = tiny_pipeline()
    pipe.save_pretrained(tmp_path / "pipeline")
    other = tiny_pipeline(seed=1).vq_model
    other.save_pretrained(tmp_path / "other_vq")
    sc.main(
        ["--data_dir", str(dataset), "--model", str(tmp_path / "pipeline"), "--vq_model", str(tmp_path / "other_vq")]
        + ["--samples_per_category", "2", "--categories", "order_2", "wave_hand", "--output_dir", str(tmp_path / "out")]
    )
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["vq_model"] == str(tmp_path / "other_vq") and list(result["categories"]) == ["order_2", "wave_hand"]
    assert all(
        list(row) == ["data", "latent", "tokenizer"] and row["data"] == 1.0 for row in result["categories"].values()
    )
    pipe.vq_model = other
    again = sc.stage_agreement(pipe, dataset, samples=2, categories=("order_2", "wave_hand"), sample=False)
    assert again == result["categories"]

"""What the tests share: tiny configs, models and pipelines, and tiny HumanML3D-layout folders (CPU, seconds).

The real data lives in `tests.shared_data`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from tests.shared_data import HUMANML3D_SAMPLE, ROOT, SHARED_DATA

FEATURE_DIM = 263
# (caption, tokens): a few distinct texts, so that a contrastive evaluator has something to learn.
CAPTIONS = [
    ("a person walks forward", "a/DET person/NOUN walk/VERB forward/ADV"),
    ("a person jumps up", "a/DET person/NOUN jump/VERB up/ADV"),
    ("someone waves the left hand", "someone/PRON wave/VERB the/DET left/ADJ hand/NOUN"),
    ("a man turns around", "a/DET man/NOUN turn/VERB around/ADV"),
]


def make_motion_folder(root: Path, splits: dict[str, int], seed: int = 0, feature_dim: int = FEATURE_DIM) -> Path:
    """Writes a HumanML3D-layout folder with ``splits[name]`` motions of ``feature_dim`` features per split.

    Motion i shows caption ``i % 4``: its features are that caption's pattern plus noise, so text and motion
    agree. Lengths vary in [40, 64) frames; the first split item of every 7 also gets a second caption.
    """
    rng = np.random.default_rng(seed)
    patterns_CD = rng.normal(size=(len(CAPTIONS), feature_dim)).astype(np.float32)
    (root / "new_joint_vecs").mkdir(parents=True)
    (root / "texts").mkdir()
    all_motions = []
    index = 0
    for split, count in splits.items():
        ids = []
        for _ in range(count):
            motion_id = f"{index:06d}"
            label = index % len(CAPTIONS)
            frames = int(rng.integers(40, 64))
            motion = patterns_CD[label] + 0.5 * rng.normal(size=(frames, feature_dim)).astype(np.float32)
            np.save(root / "new_joint_vecs" / f"{motion_id}.npy", motion.astype(np.float32))
            caption, tokens = CAPTIONS[label]
            lines = [f"{caption}#{tokens}#0.0#0.0"]
            if index % 7 == 0:
                lines.append(f"{caption} slowly#{tokens} slowly/ADV#0.0#0.0")
            (root / "texts" / f"{motion_id}.txt").write_text("\n".join(lines) + "\n")
            all_motions.append(motion)
            ids.append(motion_id)
            index += 1
        (root / f"{split}.txt").write_text("\n".join(ids) + "\n")
    stacked = np.concatenate(all_motions)
    np.save(root / "Mean.npy", stacked.mean(0))
    np.save(root / "Std.npy", stacked.std(0))
    return root


def tiny_contrastive_config(**overrides):
    from moscale.evaluation.contrastive_evaluator import ContrastiveEvaluatorConfig, build_vocabulary

    settings = dict(
        feature_dim=FEATURE_DIM,
        vocabulary=build_vocabulary(caption for caption, _ in CAPTIONS),
        hidden_size=32,
        num_layers=1,
        num_heads=2,
        embedding_dim=16,
        dropout=0.0,
    )
    settings.update(overrides)
    return ContrastiveEvaluatorConfig(**settings)


TINY_VQ_CONFIG = dict(code_dim=16, num_codes=32, width=32, depth=1)
TINY_TRANSFORMER_CONFIG = dict(
    num_codes=32,
    code_dim=16,
    condition_dim=64,
    text_pool_head_dim=32,
    hidden_size=32,
    num_layers=1,
    num_attention_heads=2,
    text_dim=32,
)
TINY_T5_CONFIG = dict(d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4)


def tiny_pipeline(
    seed: int = 0,
    feature_dim: int = FEATURE_DIM,
    scales: tuple[int, ...] | None = None,
    sample_steps_per_scale: tuple[int, ...] | None = None,
    **pipeline_options,
):
    """Random tiny models, perturbed as the parity fixtures are, so that logits vary from position to position,
    with a tiny T5 encoder and the real T5 tokenizer.

    ``feature_dim`` 263 makes a HumanML3D pipeline with the sample's Mean/Std (so joints come out in metres), 251 a
    KIT-ML one with the evaluator's KIT-ML statistics. ``scales`` and ``sample_steps_per_scale`` change the scale
    schedule of both models; ``pipeline_options`` go to `MoScalePipeline` (``min_num_frames``, ...).
    """
    import torch
    from transformers import AutoTokenizer, T5Config, T5EncoderModel

    from moscale.models.modeling_moscale import MoScaleConfig, MoScaleForTextToMotion
    from moscale.models.modeling_moscale_vq import MoScaleVQConfig, MoScaleVQModel
    from moscale.motion.representation import HUMANML3D, KIT_ML
    from moscale.pipelines.pipeline_moscale import MoScalePipeline

    skeleton = {spec.feature_dim: spec for spec in (HUMANML3D, KIT_ML)}[feature_dim]
    schedule = {"scales": scales} if scales is not None else {}
    steps = {"sample_steps_per_scale": sample_steps_per_scale} if sample_steps_per_scale is not None else {}
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(SHARED_DATA / "t5_small_tokenizer")
    text_encoder = T5EncoderModel(T5Config(vocab_size=len(tokenizer), **TINY_T5_CONFIG)).eval()
    vq_model = MoScaleVQModel(
        MoScaleVQConfig(
            **TINY_VQ_CONFIG,
            **schedule,
            motion_dim=feature_dim,
            joint_position_dims=(4, 4 + 3 * (skeleton.joints_num - 1)),
        )
    ).eval()
    transformer = MoScaleForTextToMotion(MoScaleConfig(**TINY_TRANSFORMER_CONFIG, **schedule, **steps)).eval()
    with torch.no_grad():
        for model in (vq_model, transformer):
            for param in model.parameters():
                std = 0.5 / math.sqrt(param.shape[-1]) if param.ndim >= 2 else 0.1
                param.add_(torch.randn_like(param) * std)
        # A fresh tokenizer's codebook is all zeros (training seeds it from data); random codes make tokens matter.
        vq_model.quantizer.codebook.normal_()
    if feature_dim == HUMANML3D.feature_dim:
        mean, std = np.load(HUMANML3D_SAMPLE / "Mean.npy"), np.load(HUMANML3D_SAMPLE / "Std.npy")
    else:
        from moscale.evaluation.t2m_evaluator import load_evaluator_stats

        mean, std = load_evaluator_stats("kit-ml")
    pipe = MoScalePipeline(
        vq_model, transformer, text_encoder, tokenizer, motion_mean=mean, motion_std=std, **pipeline_options
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def calm_pipeline():
    """The tiny random pipeline (seed 1) with its decoder output rescaled so that decoded features have the data's
    spread (std 0.3 in normalised units): generated joints are then in metres, and joint distances and frame steps
    compare with a real clip's, although the motion means nothing."""
    import torch

    pipeline = tiny_pipeline(seed=1)
    probe = pipeline("calibration", num_frames=196, output_type="latent", generator=torch.Generator().manual_seed(0))
    decoded = pipeline.vq_model.decode(list(probe.tokens), torch.tensor([196]))
    with torch.no_grad():
        pipeline.vq_model.decoder.conv_out.weight.mul_(0.3 / decoded.std())
        pipeline.vq_model.decoder.conv_out.bias.zero_()
    return pipeline


def save_tiny_t2m_files(root: Path, dataset_folder: str = "humanml3d", feature_dim: int = FEATURE_DIM):
    """A tiny random T2M evaluator saved as ``root/checkpoint_dir/<dataset_folder>/text_mot_match/model/finest.tar``
    and GloVe files for the fixture captions' words in ``root/glove``; returns the evaluator, words and vectors."""
    import pickle

    import torch

    from moscale.evaluation.t2m_evaluator import T2MEvaluator

    torch.manual_seed(0)
    dataset = "kit-ml" if feature_dim == 251 else "humanml3d"
    evaluator = T2MEvaluator(dim_pose=feature_dim, dim_word=8, dim_text_hidden=16, dim_motion_hidden=16,
                             dim_movement_enc_hidden=16, dim_movement_latent=16, dim_coemb_hidden=8,
                             dataset=dataset)  # fmt: skip
    checkpoint = root / "checkpoint_dir" / dataset_folder / "text_mot_match" / "model" / "finest.tar"
    checkpoint.parent.mkdir(parents=True)
    torch.save({name: getattr(evaluator, name).state_dict() for name in
                ("movement_encoder", "text_encoder", "motion_encoder")}, checkpoint)  # fmt: skip
    words = ["sos", "eos", "unk"] + sorted({t.split("/")[0] for _, tokens in CAPTIONS for t in tokens.split()})
    vectors = np.random.default_rng(0).normal(size=(len(words), 8))
    (root / "glove").mkdir()
    np.save(root / "glove" / "our_vab_data.npy", vectors)
    (root / "glove" / "our_vab_words.pkl").write_bytes(pickle.dumps(words))
    (root / "glove" / "our_vab_idx.pkl").write_bytes(pickle.dumps({word: i for i, word in enumerate(words)}))
    return evaluator, words, vectors


def reimported_joints(path: Path) -> np.ndarray:
    """The 22 HumanML3D joints (T, 22, 3) of a BVH file that `moscale.motion.bvh_export` wrote, read back by name."""
    from moscale.motion.bvh import read_bvh
    from moscale.motion.representation import HUMANML3D_JOINT_NAMES

    motion = read_bvh(path)
    return motion.positions()[:, [motion.names.index(name) for name in HUMANML3D_JOINT_NAMES]]


# The evaluation protocol's tests: 112 test items are 7 batches of 16, more than the 100 pairs Diversity draws.
NUM_TEST_ITEMS, PROTOCOL_TEST_BATCH_SIZE = 112, 16


def protocol_settings(**overrides):
    """Small `ProtocolSettings`: 2 repeats of batches of 16, 1 MultiModality batch of 11 generations."""
    from moscale.evaluation.protocol import ProtocolSettings

    values = dict(
        seed=3, repeats=2, batch_size=PROTOCOL_TEST_BATCH_SIZE, refinement_steps=(1, 1, 1, 1), multimodality_batches=1,
        multimodality_generations=11,
    )  # fmt: skip
    values.update(overrides)
    return ProtocolSettings(**values)


def perfect_generator(rows, settings, repeat, noise=0.0):
    """A 'model' that returns the real motions of each batch (looked up by captions and lengths), plus noise."""
    import torch

    from moscale.evaluation.protocol import load_batch, repeat_batches

    table = {}
    for batch, indices in enumerate(repeat_batches(len(rows), settings.batch_size, settings.seed, repeat)):
        data = load_batch(rows, indices, settings.seed, repeat, batch)
        table[(tuple(data.captions), tuple(data.lengths.tolist()))] = data.motions

    def generate(captions, lengths, seed):
        motions = table[(tuple(captions), tuple(lengths.tolist()))]
        noise_BND = torch.randn(motions.shape, generator=torch.Generator().manual_seed(seed))
        inside = (torch.arange(motions.shape[1])[None] < lengths[:, None])[..., None]
        return motions + noise * noise_BND * inside

    return generate


def load_script(name: str, folder: str = "examples"):
    """The script `<folder>/<name>.py` as a module (its own directory on sys.path, as when it runs)."""
    import importlib.util
    import sys

    scripts = ROOT / folder
    sys.path.insert(0, str(scripts))
    spec = importlib.util.spec_from_file_location(f"{folder}_{name}", scripts / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the script runs
    spec.loader.exec_module(module)
    return module

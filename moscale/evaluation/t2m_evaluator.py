"""The T2M text-motion evaluator of Guo et al. (CVPR 2022), as used to score HumanML3D and KIT-ML generations.

Every number in the text-to-motion tables (R-precision, FID, MM-Dist, Diversity, MultiModality) is computed from the
co-embeddings of this one network. It is made of three parts, all loaded from the standard
`text_mot_match/model/finest.tar` checkpoint:

- a movement encoder: two strided 1-D convolutions over the motion features without the 4 foot-contact channels,
  turning T frames into T/4 "movement" vectors;
- a motion encoder: a bidirectional GRU over the first ``m_len // 4`` movement vectors -> a 512-d embedding;
- a text encoder: a bidirectional GRU over GloVe word vectors (300-d) plus projected part-of-speech one-hots (15-d)
  -> a 512-d embedding.

Motions must be normalised with the evaluator's own statistics (`load_evaluator_stats`), not the dataset's
`Mean.npy`/`Std.npy`: the two differ (see `docs/evaluation.md`). Copies of the evaluator statistics ship in
`moscale/evaluation/evaluator_stats/` under their MIT licence (from GuyTevet/motion-diffusion-model).

The checkpoint and the GloVe files are not redistributed here; `T2MEvaluator.from_pretrained` and
`WordVectorizer.from_pretrained` say where to get them when they are missing.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from moscale.motion.representation import UNIT_LENGTH

__all__ = [
    "DATASET_FOLDERS",
    "EVALUATOR_DOWNLOAD_HINT",
    "GLOVE_DOWNLOAD_HINT",
    "MAX_TEXT_LEN",
    "POS_CATEGORIES",
    "UNIT_LENGTH",
    "VIP_WORDS",
    "EvaluatorEmbeddings",
    "MotionEncoderBiGRUCo",
    "MovementConvEncoder",
    "T2MEvaluator",
    "TextEncoderBiGRUCo",
    "WordVectorizer",
    "load_evaluator_stats",
]

POS_CATEGORIES: dict[str, int] = {
    "VERB": 0,
    "NOUN": 1,
    "DET": 2,
    "ADP": 3,
    "NUM": 4,
    "AUX": 5,
    "PRON": 6,
    "ADJ": 7,
    "ADV": 8,
    "Loc_VIP": 9,
    "Body_VIP": 10,
    "Obj_VIP": 11,
    "Act_VIP": 12,
    "Desc_VIP": 13,
    "OTHER": 14,
}

# Words whose part of speech the evaluator replaces by a motion-specific category. The lookup checks these
# categories in this order; the first one listing the word wins.
VIP_WORDS: dict[str, frozenset[str]] = {
    "Loc_VIP": frozenset(
        "left right clockwise counterclockwise anticlockwise forward back backward up down straight curve".split()
    ),
    "Body_VIP": frozenset("arm chin foot feet face hand mouth leg waist eye knee shoulder thigh".split()),
    "Obj_VIP": frozenset("stair dumbbell chair window floor car ball handrail baseball basketball".split()),
    "Act_VIP": frozenset(
        "walk run swing pick bring kick put squat throw hop dance jump turn stumble stop sit lift lower raise wash "
        "stand kneel stroll rub bend balance flap jog shuffle lean rotate spin spread climb".split()
    ),
    "Desc_VIP": frozenset("slowly carefully fast careful slow quickly happy angry sad happily angrily sadly".split()),
}

MAX_TEXT_LEN = 20
NUM_FOOT_CONTACTS = 4

# Folder names the evaluator downloads use for each dataset: MoScale/MoMask use `humanml3d`, T2M/MDM use `t2m`.
DATASET_FOLDERS: dict[str, tuple[str, ...]] = {
    "humanml3d": ("humanml3d", "t2m"),
    "kit-ml": ("kit", "kit-ml"),
}
_STATS_PREFIX = {"humanml3d": "t2m", "kit-ml": "kit"}
_STATS_DIR = Path(__file__).resolve().parent / "evaluator_stats"
_CHECKPOINT_SUBPATH = Path("text_mot_match") / "model" / "finest.tar"
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

EVALUATOR_DOWNLOAD_HINT = (
    "The T2M evaluator checkpoint (`<dataset>/text_mot_match/model/finest.tar`) comes with the evaluator download "
    "of the MoScale authors (`bash prepare/download_evaluators.sh` in github.com/zhiwei-zzz/MoScale, unzipped into "
    "`checkpoint_dir/`) or of T2M (github.com/EricGuo5513/text-to-motion, `checkpoints/t2m/`). Pass the "
    "`checkpoint_dir` folder, the dataset folder inside it, the `finest.tar` file, or a Hugging Face Hub repository "
    "holding the same layout."
)
GLOVE_DOWNLOAD_HINT = (
    "The GloVe files `our_vab_data.npy`, `our_vab_words.pkl` and `our_vab_idx.pkl` come with "
    "`bash prepare/download_glove.sh` in github.com/zhiwei-zzz/MoScale (the same `glove/` folder as in "
    "github.com/EricGuo5513/text-to-motion). Pass the `glove` folder or a Hugging Face Hub repository holding it."
)


def _check_dataset(dataset: str) -> None:
    if dataset not in DATASET_FOLDERS:
        raise ValueError(f"`dataset` must be one of {sorted(DATASET_FOLDERS)}, got {dataset!r}.")


def load_evaluator_stats(dataset: str = "humanml3d") -> tuple[np.ndarray, np.ndarray]:
    """The evaluator's normalisation mean and std (float64, (263,) for HumanML3D, (251,) for KIT-ML)."""
    _check_dataset(dataset)
    prefix = _STATS_PREFIX[dataset]
    return (
        np.load(_STATS_DIR / f"{prefix}_mean.npy", allow_pickle=False),
        np.load(_STATS_DIR / f"{prefix}_std.npy", allow_pickle=False),
    )


def _resolve_source(path_or_repo_id: str | Path, patterns: list[str], revision: str | None, hint: str) -> Path:
    """A local folder/file as it is, or a snapshot of the Hub repository restricted to ``patterns``."""
    local = Path(path_or_repo_id).expanduser()
    if local.exists():
        return local
    name = str(path_or_repo_id)
    if not _REPO_ID.match(name):
        raise FileNotFoundError(f"{name} does not exist. {hint}")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(name, revision=revision, allow_patterns=patterns))
    except (HfHubHTTPError, HFValidationError, LocalEntryNotFoundError, OSError) as error:
        raise FileNotFoundError(
            f"{name} is neither a local path nor a reachable Hugging Face Hub repository ({error}). {hint}"
        ) from error


class _PlainDataUnpickler(pickle.Unpickler):
    """Unpickles only built-in containers and scalars: any reference to a class or function is refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(
            f"Refusing to load {module}.{name}: the GloVe vocabulary files must hold only a list and a dict."
        )


def _load_plain_pickle(path: Path) -> Any:
    with open(path, "rb") as handle:
        return _PlainDataUnpickler(handle).load()


class WordVectorizer:
    """GloVe word vectors and part-of-speech one-hots for the evaluator's text encoder.

    Caption tokens come as ``"word/POS"`` (the HumanML3D `texts/*.txt` format, e.g. ``"walk/VERB"``). A word in the
    vocabulary gets its vector; its POS one-hot is its motion-specific category when the word is listed in
    `VIP_WORDS`, else its tag (``OTHER`` for tags outside `POS_CATEGORIES`). A word outside the vocabulary gets the
    ``unk`` vector and the ``OTHER`` one-hot.
    """

    def __init__(self, vectors_VE: np.ndarray, words: Sequence[str], word_to_index: Mapping[str, int]) -> None:
        vectors_VE = np.asarray(vectors_VE)
        if vectors_VE.ndim != 2:
            raise ValueError(f"GloVe vectors must be a 2-D array, got shape {vectors_VE.shape}.")
        missing = [word for word in ("sos", "eos", "unk") if word not in word_to_index]
        if missing:
            raise ValueError(f"The vocabulary lacks the special words {missing}.")
        self.word_to_vector = {word: vectors_VE[word_to_index[word]] for word in words}
        self.dim_word = vectors_VE.shape[1]

    @classmethod
    def from_pretrained(
        cls, path_or_repo_id: str | Path, prefix: str = "our_vab", revision: str | None = None
    ) -> WordVectorizer:
        """Loads ``<prefix>_data.npy``, ``<prefix>_words.pkl`` and ``<prefix>_idx.pkl`` from a folder or Hub repo.

        The two ``.pkl`` files are Python pickles. They are read with an unpickler that accepts only plain lists,
        dicts, strings and numbers, so a tampered file fails to load instead of running code; still, use files
        from a source you trust. The vectors are read with ``allow_pickle=False``.
        """
        suffixes = ("_data.npy", "_words.pkl", "_idx.pkl")
        patterns = [f"{prefix}{suffix}" for suffix in suffixes] + [f"*/{prefix}{suffix}" for suffix in suffixes]
        root = _resolve_source(path_or_repo_id, patterns, revision, GLOVE_DOWNLOAD_HINT)
        folder = next(
            (candidate for candidate in (root, root / "glove") if (candidate / f"{prefix}_data.npy").is_file()), root
        )
        paths = [folder / f"{prefix}{suffix}" for suffix in suffixes]
        missing = [path.name for path in paths if not path.is_file()]
        if missing:
            raise FileNotFoundError(f"{folder} lacks {missing}. {GLOVE_DOWNLOAD_HINT}")
        words = _load_plain_pickle(paths[1])
        word_to_index = _load_plain_pickle(paths[2])
        if not isinstance(words, list) or not isinstance(word_to_index, dict):
            raise ValueError(f"{paths[1].name} must hold a list and {paths[2].name} a dict.")
        return cls(np.load(paths[0], allow_pickle=False), words, word_to_index)

    def __len__(self) -> int:
        return len(self.word_to_vector)

    @staticmethod
    def pos_one_hot(category: str) -> np.ndarray:
        """The 15-d float64 one-hot of a POS category (``OTHER`` for unknown categories)."""
        one_hot = np.zeros(len(POS_CATEGORIES))
        one_hot[POS_CATEGORIES.get(category, POS_CATEGORIES["OTHER"])] = 1
        return one_hot

    def __getitem__(self, token: str) -> tuple[np.ndarray, np.ndarray]:
        """Word vector and POS one-hot of one ``"word/POS"`` token."""
        parts = token.split("/")
        if len(parts) != 2:
            raise ValueError(f"Caption tokens must look like 'word/POS' (e.g. 'walk/VERB'), got {token!r}.")
        word, pos = parts
        if word not in self.word_to_vector:
            return self.word_to_vector["unk"], self.pos_one_hot("OTHER")
        category = next((name for name, listed in VIP_WORDS.items() if word in listed), pos)
        return self.word_to_vector[word], self.pos_one_hot(category)

    def encode(self, tokens: Sequence[str], max_text_len: int = MAX_TEXT_LEN) -> tuple[np.ndarray, np.ndarray, int]:
        """Word vectors (max_text_len+2, E), POS one-hots (max_text_len+2, 15) and the length of one caption.

        The caption is cut to ``max_text_len`` tokens and framed by ``sos``/``eos``; shorter captions are padded with
        ``unk`` tokens up to ``max_text_len + 2``. The returned length counts ``sos`` and ``eos``.
        """
        if isinstance(tokens, str):
            raise TypeError("`tokens` must be a list of 'word/POS' strings, not one string: split it first.")
        framed = ["sos/OTHER", *tokens[:max_text_len], "eos/OTHER"]
        length = len(framed)
        framed += ["unk/OTHER"] * (max_text_len + 2 - length)
        vectors, one_hots = zip(*(self[token] for token in framed))
        return np.stack(vectors), np.stack(one_hots), length

    def encode_batch(
        self, token_lists: Sequence[Sequence[str]], max_text_len: int = MAX_TEXT_LEN
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`encode` for several captions, in the given order: float32 (B, L, E), float32 (B, L, 15), int64 (B,)."""
        encoded = [self.encode(tokens, max_text_len) for tokens in token_lists]
        if not encoded:
            raise ValueError("`token_lists` is empty.")
        word_embs, pos_ohot, cap_lens = zip(*encoded)
        return (
            torch.from_numpy(np.stack(word_embs)).float(),
            torch.from_numpy(np.stack(pos_ohot)).float(),
            torch.tensor(cap_lens, dtype=torch.int64),
        )


class MovementConvEncoder(nn.Module):
    """Two stride-2 convolutions (T -> T/4) and a linear layer over the motion features."""

    def __init__(self, input_size: int, hidden_size: int, output_size: int) -> None:
        super().__init__()
        # The dropouts keep the checkpoint's layer indices (main.0, main.3); they are inactive in eval mode.
        self.main = nn.Sequential(
            nn.Conv1d(input_size, hidden_size, 4, 2, 1),
            nn.Dropout(0.2),
            nn.LeakyReLU(0.2),
            nn.Conv1d(hidden_size, output_size, 4, 2, 1),
            nn.Dropout(0.2),
            nn.LeakyReLU(0.2),
        )
        self.out_net = nn.Linear(output_size, output_size)

    def forward(self, features_BTC: torch.Tensor) -> torch.Tensor:
        return self.out_net(self.main(features_BTC.transpose(1, 2)).transpose(1, 2))


class _BiGRUEncoder(nn.Module):
    """A bidirectional GRU from a learnt initial state; the embedding is made from both directions' final states."""

    def __init__(self, hidden_size: int, output_size: int) -> None:
        super().__init__()
        self.gru = nn.GRU(hidden_size, hidden_size, batch_first=True, bidirectional=True)
        self.output_net = nn.Sequential(
            nn.Linear(hidden_size * 2, hidden_size),
            nn.LayerNorm(hidden_size),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden_size, output_size),
        )
        self.hidden = nn.Parameter(torch.zeros(2, 1, hidden_size))

    def _encode(self, inputs_BLH: torch.Tensor, lengths_B: torch.Tensor) -> torch.Tensor:
        packed = pack_padded_sequence(inputs_BLH, lengths_B.cpu(), batch_first=True, enforce_sorted=False)
        _, last_2BH = self.gru(packed, self.hidden.expand(-1, inputs_BLH.shape[0], -1).contiguous())
        return self.output_net(torch.cat([last_2BH[0], last_2BH[1]], dim=-1))


class TextEncoderBiGRUCo(_BiGRUEncoder):
    """Text side: word vector + projected POS one-hot per token, a bi-GRU over the first ``cap_len`` tokens."""

    def __init__(self, word_size: int, pos_size: int, hidden_size: int, output_size: int) -> None:
        super().__init__(hidden_size, output_size)
        self.pos_emb = nn.Linear(pos_size, word_size)
        self.input_emb = nn.Linear(word_size, hidden_size)

    def forward(
        self, word_embs_BLE: torch.Tensor, pos_ohot_BLP: torch.Tensor, cap_lens_B: torch.Tensor
    ) -> torch.Tensor:
        return self._encode(self.input_emb(word_embs_BLE + self.pos_emb(pos_ohot_BLP)), cap_lens_B)


class MotionEncoderBiGRUCo(_BiGRUEncoder):
    """Motion side: a bi-GRU over the first ``m_len // 4`` movement vectors."""

    def __init__(self, input_size: int, hidden_size: int, output_size: int) -> None:
        super().__init__(hidden_size, output_size)
        self.input_emb = nn.Linear(input_size, hidden_size)

    def forward(self, movements_BLM: torch.Tensor, lengths_B: torch.Tensor) -> torch.Tensor:
        return self._encode(self.input_emb(movements_BLM), lengths_B)


@dataclass
class EvaluatorEmbeddings:
    """Co-embeddings in the evaluator's output order: rows sorted by descending motion length.

    ``order[i]`` is the input row that output row i comes from (pairs stay aligned: text i goes with motion i).
    ``text_embeddings`` is None for `T2MEvaluator.get_motion_embeddings`.
    """

    text_embeddings: torch.Tensor | None
    motion_embeddings: torch.Tensor
    order: torch.Tensor


class T2MEvaluator(nn.Module):
    """The T2M evaluator networks with the authors' input conventions.

    Inputs follow the HumanML3D evaluation loader: ``word_embs`` (B, 22, 300) and ``pos_ohot`` (B, 22, 15) from
    `WordVectorizer.encode_batch`, ``cap_lens`` (B,), ``motions`` (B, T, dim_pose) normalised with the
    evaluator's statistics (`normalize`) and zero-padded after ``m_lens`` (B,) frames.
    """

    def __init__(
        self,
        dim_pose: int = 263,
        dim_word: int = 300,
        dim_pos_ohot: int = len(POS_CATEGORIES),
        dim_text_hidden: int = 512,
        dim_motion_hidden: int = 1024,
        dim_movement_enc_hidden: int = 512,
        dim_movement_latent: int = 512,
        dim_coemb_hidden: int = 512,
        unit_length: int = UNIT_LENGTH,
        dataset: str = "humanml3d",
    ) -> None:
        super().__init__()
        _check_dataset(dataset)
        self.dataset = dataset
        self.dim_pose = dim_pose
        self.unit_length = unit_length
        self.movement_encoder = MovementConvEncoder(
            dim_pose - NUM_FOOT_CONTACTS, dim_movement_enc_hidden, dim_movement_latent
        )
        self.text_encoder = TextEncoderBiGRUCo(dim_word, dim_pos_ohot, dim_text_hidden, dim_coemb_hidden)
        self.motion_encoder = MotionEncoderBiGRUCo(dim_movement_latent, dim_motion_hidden, dim_coemb_hidden)
        mean, std = load_evaluator_stats(dataset)
        if mean.shape != (dim_pose,):
            raise ValueError(f"dim_pose={dim_pose} does not match the {dataset} evaluator statistics {mean.shape}.")
        self.register_buffer("feature_mean", torch.from_numpy(mean), persistent=False)
        self.register_buffer("feature_std", torch.from_numpy(std), persistent=False)
        self.eval()

    @classmethod
    def from_pretrained(
        cls,
        path_or_repo_id: str | Path,
        dataset: str = "humanml3d",
        revision: str | None = None,
        device: str | torch.device = "cpu",
    ) -> T2MEvaluator:
        """Loads `finest.tar` (with ``weights_only=True``) from a local path or a Hugging Face Hub repository.

        ``path_or_repo_id`` is the `finest.tar` file, a folder holding `text_mot_match/model/finest.tar`, or a
        folder holding `<dataset folder>/text_mot_match/model/finest.tar` (``humanml3d`` or ``t2m`` for HumanML3D,
        ``kit`` for KIT-ML). Layer sizes are read from the checkpoint; weights are cast to float32.
        """
        _check_dataset(dataset)
        folders = DATASET_FOLDERS[dataset]
        patterns = [str(_CHECKPOINT_SUBPATH)] + [f"{folder}/{_CHECKPOINT_SUBPATH}" for folder in folders]
        root = _resolve_source(path_or_repo_id, patterns, revision, EVALUATOR_DOWNLOAD_HINT)
        candidates = [root] if root.is_file() else [root / pattern for pattern in patterns]
        checkpoint_path = next((path for path in candidates if path.is_file()), None)
        if checkpoint_path is None:
            looked = ", ".join(str(path) for path in candidates)
            raise FileNotFoundError(
                f"No T2M evaluator checkpoint found (looked for {looked}). {EVALUATOR_DOWNLOAD_HINT}"
            )
        checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
        missing = {"movement_encoder", "text_encoder", "motion_encoder"} - set(checkpoint)
        if missing:
            raise ValueError(f"{checkpoint_path} is not a T2M evaluator checkpoint: it lacks {sorted(missing)}.")
        movement, text, motion = (checkpoint[key] for key in ("movement_encoder", "text_encoder", "motion_encoder"))
        evaluator = cls(
            dim_pose=movement["main.0.weight"].shape[1] + NUM_FOOT_CONTACTS,
            dim_word=text["pos_emb.weight"].shape[0],
            dim_pos_ohot=text["pos_emb.weight"].shape[1],
            dim_text_hidden=text["input_emb.weight"].shape[0],
            dim_motion_hidden=motion["input_emb.weight"].shape[0],
            dim_movement_enc_hidden=movement["main.0.weight"].shape[0],
            dim_movement_latent=movement["out_net.weight"].shape[0],
            dim_coemb_hidden=text["output_net.3.weight"].shape[0],
            dataset=dataset,
        )
        evaluator.movement_encoder.load_state_dict(movement)
        evaluator.text_encoder.load_state_dict(text)
        evaluator.motion_encoder.load_state_dict(motion)
        return evaluator.to(device).eval()

    def normalize(self, features: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Raw (unnormalised) motion features -> the evaluator's input scale, computed in float64, returned float32.

        Zero-pad AFTER normalising: padded frames must be 0 in normalised units, as in the evaluation loader.
        """
        features = torch.as_tensor(features, device=self.feature_mean.device, dtype=torch.float64)
        if features.shape[-1] != self.dim_pose:
            raise ValueError(f"Expected {self.dim_pose} features in the last dimension, got {features.shape[-1]}.")
        return ((features - self.feature_mean) / self.feature_std).float()

    @staticmethod
    def length_order(m_lens: torch.Tensor) -> torch.Tensor:
        """Row order by descending motion length; ties keep their input order (stable)."""
        return torch.as_tensor(np.argsort(-np.asarray(m_lens.tolist()), kind="stable"), dtype=torch.int64)

    def _check_motions(self, motions: torch.Tensor, m_lens: torch.Tensor) -> None:
        if motions.ndim != 3 or motions.shape[-1] != self.dim_pose:
            raise ValueError(f"`motions` must be (B, T, {self.dim_pose}), got {tuple(motions.shape)}.")
        if m_lens.shape != (motions.shape[0],):
            raise ValueError(f"`m_lens` must be ({motions.shape[0]},), got {tuple(m_lens.shape)}.")
        if (m_lens < self.unit_length).any() or (m_lens > motions.shape[1]).any():
            raise ValueError(
                f"Every motion length must lie in [{self.unit_length}, {motions.shape[1]}] frames, got "
                f"{m_lens.tolist()}."
            )

    def _embed_motions_in_order(self, motions: torch.Tensor, m_lens: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
        motions = motions.to(self.feature_mean.device).float()[order]
        movements_BLM = self.movement_encoder(motions[..., :-NUM_FOOT_CONTACTS])
        return self.motion_encoder(movements_BLM, m_lens[order] // self.unit_length)

    @torch.no_grad()
    def encode_text(self, word_embs: torch.Tensor, pos_ohot: torch.Tensor, cap_lens: torch.Tensor) -> torch.Tensor:
        """Text embeddings (B, 512) in the INPUT order. ``cap_lens`` count sos/eos and need not be sorted."""
        if word_embs.ndim != 3 or pos_ohot.shape[:2] != word_embs.shape[:2]:
            raise ValueError(
                f"`word_embs` (B, L, E) and `pos_ohot` (B, L, P) must agree, got {tuple(word_embs.shape)} and "
                f"{tuple(pos_ohot.shape)}."
            )
        cap_lens = torch.as_tensor(cap_lens, dtype=torch.int64)
        if cap_lens.shape != (word_embs.shape[0],) or (cap_lens < 1).any() or (cap_lens > word_embs.shape[1]).any():
            raise ValueError(
                f"`cap_lens` must hold {word_embs.shape[0]} lengths in [1, {word_embs.shape[1]}], got "
                f"{cap_lens.tolist()}."
            )
        device = self.feature_mean.device
        return self.text_encoder(word_embs.to(device).float(), pos_ohot.to(device).float(), cap_lens)

    @torch.no_grad()
    def get_co_embeddings(
        self,
        word_embs: torch.Tensor,
        pos_ohot: torch.Tensor,
        cap_lens: torch.Tensor,
        motions: torch.Tensor,
        m_lens: torch.Tensor,
    ) -> EvaluatorEmbeddings:
        """Text and motion embeddings (B, 512) of paired captions and motions, sorted by descending motion length.

        This is the order the published numbers were computed in: it decides which rows Diversity samples.
        """
        m_lens = torch.as_tensor(m_lens, dtype=torch.int64).cpu()
        self._check_motions(motions, m_lens)
        if word_embs.shape[0] != motions.shape[0]:
            raise ValueError(f"Got {word_embs.shape[0]} captions for {motions.shape[0]} motions.")
        order = self.length_order(m_lens)
        motion_embeddings = self._embed_motions_in_order(motions, m_lens, order)
        text_embeddings = self.encode_text(word_embs, pos_ohot, cap_lens)[order.to(motion_embeddings.device)]
        return EvaluatorEmbeddings(text_embeddings, motion_embeddings, order)

    @torch.no_grad()
    def get_motion_embeddings(self, motions: torch.Tensor, m_lens: torch.Tensor) -> EvaluatorEmbeddings:
        """Motion embeddings only, in the same order as `get_co_embeddings` (descending motion length)."""
        m_lens = torch.as_tensor(m_lens, dtype=torch.int64).cpu()
        self._check_motions(motions, m_lens)
        order = self.length_order(m_lens)
        return EvaluatorEmbeddings(None, self._embed_motions_in_order(motions, m_lens, order), order)

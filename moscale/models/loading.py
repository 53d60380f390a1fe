"""Loading errors that say what went wrong: a folder that does not exist, a Hub id that cannot be reached, a
weights file that is damaged.

The libraries underneath answer a missing folder with "Repo id must be in the form 'repo_name'" and a truncated
weights file with "incomplete metadata" (no file, no component). `explained_loading_errors` wraps a
`from_pretrained` call, for the models through `ExplainedLoadingMixin` and for the pipeline directly.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from huggingface_hub import is_offline_mode
from safetensors import SafetensorError, safe_open

# "name" or "owner/name": what the Hugging Face Hub accepts as a repository id.
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def _damaged_weight_files(folder: Path) -> list[Path]:
    """The safetensors files under `folder` whose header does not describe the file (cut short, or not one)."""
    damaged = []
    for path in sorted(folder.rglob("*.safetensors")):
        try:
            with safe_open(path, framework="pt"):
                pass
        except (SafetensorError, OSError):
            damaged.append(path)
    return damaged


@contextmanager
def explained_loading_errors(what: str, source: str | os.PathLike) -> Iterator[None]:
    """Around `<what>.from_pretrained(source)`: refuse a local path that does not exist before the libraries try it
    as a Hub id, and turn their errors for an unreachable Hub id or a damaged weights file into messages that name
    the source, the file and the component (its folder) and say what to do."""
    path = Path(source).expanduser()
    is_local = path.exists()
    if not is_local and not _HUB_ID.fullmatch(str(source)):
        raise FileNotFoundError(
            f"{what}.from_pretrained: the folder {source} does not exist (and it is not a Hugging Face Hub id); "
            "pass the folder that save_pretrained wrote"
        )
    try:
        yield
    except SafetensorError as error:
        damaged = _damaged_weight_files(path) if path.is_dir() else []
        files = ", ".join(
            f"{file}" + (f" (component '{file.parent.relative_to(path)}')" if file.parent != path else "")
            for file in damaged
        )
        raise OSError(
            f"{what}.from_pretrained({str(source)!r}): the weights file {files or 'of ' + str(source)} is damaged or "
            f"incomplete (safetensors: {error}); save or download it again"
        ) from error
    except OSError as error:
        if is_local:
            raise
        offline = " (offline mode is on: HF_HUB_OFFLINE=1, so only the local Hub cache was searched)"
        raise OSError(
            f"{what}.from_pretrained: {source!r} is not a local folder, and as a Hugging Face Hub id it could not be "
            f"loaded{offline if is_offline_mode() else ''}: {error}"
        ) from error


class ExplainedLoadingMixin:
    """`from_pretrained` with the messages of `explained_loading_errors`; put before `PreTrainedModel` in the
    bases."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        with explained_loading_errors(cls.__name__, pretrained_model_name_or_path):
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

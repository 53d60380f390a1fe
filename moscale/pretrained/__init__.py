"""The pipeline that ships inside the package: a MoScale trained on the procedural dataset (`moscale.synthetic`).

It is the default model of `moscale generate` and `moscale demo`. Its folder is a `MoScalePipeline.save_pretrained`
folder; `examples/bundled_model/build.sh` rebuilds it from scratch, and its README.md (the model card) gives the
commands, seeds, data size and training time.
"""

from pathlib import Path

BUNDLED_PIPELINE_DIR = Path(__file__).resolve().parent / "moscale-procedural"


def bundled_pipeline_path() -> Path:
    """The bundled pipeline folder; a clear error when this copy of the package was built without it."""
    if not (BUNDLED_PIPELINE_DIR / "model_index.json").is_file():
        raise FileNotFoundError(
            f"the bundled MoScale pipeline is missing from {BUNDLED_PIPELINE_DIR}: rebuild it with "
            "`bash examples/bundled_model/build.sh`, or pass a pipeline folder or Hub id with --model"
        )
    return BUNDLED_PIPELINE_DIR

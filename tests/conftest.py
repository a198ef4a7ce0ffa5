import os

import pytest

# Nothing in the tests may reach a network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def minilm_dir():
    """Directory of the offline MiniLM BERT checkpoint (a real BERT, 6 layers, 384 wide)."""
    from vilbert.offline import minilm_path

    return minilm_path()


@pytest.fixture(scope="session")
def tokenizer(minilm_dir):
    """The offline BERT's tokenizer (a test module may define its own `tokenizer` fixture instead)."""
    from vilbert.tokenization import load_tokenizer

    return load_tokenizer(minilm_dir)

"""Offline, tiny, isolated: every test runs with the Hub unreachable and its own caches."""
import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def _cache(tmp_path_factory):
    os.environ["TRANSFERBENCH_CACHE"] = str(tmp_path_factory.mktemp("tbcache"))


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> str:
    """A 2-layer, 32-wide BERT checkpoint (save_pretrained) with MiniLM's real tokenizer: a stand-in for a
    Hub checkpoint that trains in seconds."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from transferbench.models import resolve

    path = tmp_path_factory.mktemp("tiny-bert")
    tok = AutoTokenizer.from_pretrained(resolve("all-minilm-l6-v2"))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    BertModel(config).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture
def reliability_env(tmp_path, monkeypatch, request):
    """A folder on sys.path (the XOR task module is written there) with its own cache and a store holding one
    finished run (helpers.KEEP)."""
    from helpers import KEEP

    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("TRANSFERBENCH_CACHE", str(tmp_path / "cache"))
    (tmp_path / "res").mkdir()
    (tmp_path / "res" / "runs.jsonl").write_text(KEEP + "\n")
    return tmp_path

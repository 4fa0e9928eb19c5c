"""Shared fixtures: locally trained tokenizers and the released data (helpers live in tests/helpers)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from catlit.data.sources import STGSource
from catlit.models.embedded import train_tokenizer
from tests.helpers.runs import ROOT

SHARED_DATA = Path(os.environ.get("CATLIT_DATA_DIR", ROOT.parent / "shared" / "cat-data"))
PGBCT_DATA = Path(os.environ.get("CATLIT_PGBCT_DATA_DIR", ROOT.parent / "shared" / "pgbct-data"))

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture
def released_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"released CAT data not found at {SHARED_DATA} (set CATLIT_DATA_DIR)")
    return SHARED_DATA


@pytest.fixture
def pgbct_data() -> Path:
    if not PGBCT_DATA.is_dir():
        pytest.skip(f"tracing data (WinoBias, Winogender, Professions) not found at {PGBCT_DATA}")
    return PGBCT_DATA


@pytest.fixture(scope="session")
def smollm2() -> Path:
    """The folder `catlit-fetch smollm2` converted; absent, the test skips saying how to fetch it, or
    fails where CATLIT_REQUIRE_REAL_MODEL=1 (CI fetches it first)."""
    from catlit.models.fetch import folder_of, problems

    folder = folder_of("smollm2")
    found = problems(folder)
    if found:
        message = f"SmolLM2-135M-Instruct is not fetched ({found[0]}): run `catlit-fetch smollm2`"
        if os.environ.get("CATLIT_REQUIRE_REAL_MODEL") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return folder


@pytest.fixture
def stg_corpus() -> list[str]:
    splits = STGSource("toy", seed=0, params={"n_train": 200}).load()
    return [ex.text for ex in splits.train] + ["Answer:\nHigh Risk, because: Smoking: 9"]


def _metaspace_tokenizer(corpus: list[str]) -> PreTrainedTokenizerFast:
    """SentencePiece-style (Llama-2 / TinyLlama): Metaspace '▁' words, BOS prepended."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    tok.train_from_iterator(
        corpus,
        trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False),
    )
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="</s>"
    )


def _wordlevel_tokenizer(corpus: list[str]) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(
        corpus, trainers.WordLevelTrainer(special_tokens=["[UNK]", "[PAD]", "[EOS]"], show_progress=False)
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", eos_token="[EOS]"
    )


TOKENIZER_FAMILIES = {
    "bytelevel_bpe": train_tokenizer,
    "metaspace_bos": _metaspace_tokenizer,
    "wordlevel": _wordlevel_tokenizer,
}


@pytest.fixture(params=sorted(TOKENIZER_FAMILIES))
def any_tokenizer(request, stg_corpus):
    return TOKENIZER_FAMILIES[request.param](stg_corpus)

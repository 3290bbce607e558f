"""A corpus fingerprint: which excerpts a corpus configuration produces, so stale ones are noticed."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

from autointerp.corpus.builtins import builtin_file, is_builtin
from autointerp.errors import CorpusError

# Bump when the way documents are derived from unchanged bytes changes (e.g. the wiki
# cleaner), so that fingerprints of cached excerpts are invalidated.
_READER_VERSION = 1
_CHUNK_BYTES = 1 << 20


def _entry_file(entry: str) -> Path:
    return builtin_file(entry) if is_builtin(entry) else Path(entry)


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as f:
            while chunk := f.read(_CHUNK_BYTES):
                digest.update(chunk)
    except OSError as exc:
        raise CorpusError(f"cannot read corpus file {path}: {exc}") from exc
    return digest.hexdigest()


def corpus_fingerprint(
    paths: Sequence[str], text_field: str, length: int, max_tokens: int | None
) -> str:
    """Short sha256 (16 hex chars) identifying the excerpts these arguments produce.

    Covers the parameters and every entry's bytes (for builtins, the package file behind
    it), but not where a file lives: moving an unchanged file keeps the fingerprint.
    The entry kind (builtin name or suffix) is included because the same bytes read as
    .txt or .jsonl give different documents.
    """
    header = {
        "reader_version": _READER_VERSION,
        "text_field": text_field,
        "length": length,
        "max_tokens": max_tokens,
    }
    digest = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
    for entry in paths:
        kind = entry if is_builtin(entry) else Path(entry).suffix.lower()
        # Per-entry digests, newline-framed, keep entry boundaries unambiguous.
        digest.update(f"\n{kind}\n{_file_digest(_entry_file(entry))}".encode())
    return digest.hexdigest()[:16]

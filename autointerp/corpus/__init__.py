"""Text corpora: documents from files or bundled samples, cut into 64-token excerpts.

A corpus is a list of paths, each a file (`.txt` = one document, `.jsonl` = one document per line,
`.parquet` = one document per row) or `builtin:NAME`, a sample shipped inside an installed package.
Everything streams: documents and excerpts are produced lazily, so `max_tokens` stops reading early.
"""

from autointerp.corpus.builtins import BUILTIN_CORPORA, BUILTIN_PREFIX
from autointerp.corpus.documents import SUPPORTED_SUFFIXES, Document, iter_documents, resolve_corpus_paths
from autointerp.corpus.excerpts import EXCERPT_TOKENS, Excerpt, iter_excerpts
from autointerp.corpus.fingerprint import corpus_fingerprint

__all__ = ["BUILTIN_CORPORA", "BUILTIN_PREFIX", "EXCERPT_TOKENS", "SUPPORTED_SUFFIXES", "Document", "Excerpt",
           "corpus_fingerprint", "iter_documents", "iter_excerpts", "resolve_corpus_paths"]

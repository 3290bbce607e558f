"""Cut the corpus into 64-token excerpts with a subject model's tokenizer (the `excerpts` table)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import pyarrow as pa

from autointerp.config import Config, CorpusSpec
from autointerp.corpus import corpus_fingerprint, iter_documents, iter_excerpts, resolve_corpus_paths
from autointerp.progress import Progress
from autointerp.recording import EXCERPT_TOKENS
from autointerp.store import Replacement, Store
from autointerp.subject import ModelInfo, describe_model, load_tokenizer, model_revision, resolve_source


def fingerprint(corpus: CorpusSpec, base_dir: Path) -> str:
    paths = resolve_corpus_paths(corpus.paths, base_dir)
    return corpus_fingerprint(paths, corpus.text_field, EXCERPT_TOKENS, corpus.max_tokens)


def token_strings(tokenizer: Any, token_ids: np.ndarray) -> list[str]:
    """Each token decoded on its own: the text an explainer is shown for it."""
    unique = np.unique(token_ids)
    decoded = dict(zip(unique.tolist(), (tokenizer.decode([int(t)]) for t in unique)))
    return [decoded[t] for t in token_ids.tolist()]


def make_excerpts(tokenizer: Any, corpus: CorpusSpec, base_dir: Path, model: str, revision: str,
                  log: Callable[[str], None] = print) -> pa.Table:
    paths = resolve_corpus_paths(corpus.paths, base_dir)

    def tokenize(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]

    progress = Progress("tokenizing corpus", corpus.max_tokens // EXCERPT_TOKENS * EXCERPT_TOKENS, "tokens", log)
    rows: list[Any] = []
    for excerpt in iter_excerpts(iter_documents(paths, corpus.text_field), tokenize, EXCERPT_TOKENS, corpus.max_tokens):
        rows.append(excerpt)
        progress.advance(EXCERPT_TOKENS)
    token_ids = np.array([e.token_ids for e in rows], dtype=np.int32)
    flat = token_ids.reshape(-1)
    offsets = pa.array(np.arange(len(rows) + 1, dtype=np.int32) * EXCERPT_TOKENS)
    return pa.table({
        "model": pa.array([model] * len(rows)),
        "revision": pa.array([revision] * len(rows)),
        "excerpt_id": pa.array([e.excerpt_id for e in rows], pa.int32()),
        "doc_id": pa.array([e.doc_id for e in rows], pa.int32()),
        "position": pa.array([e.position for e in rows], pa.int32()),
        "token_ids": pa.ListArray.from_arrays(offsets, pa.array(flat)),
        "tokens": pa.ListArray.from_arrays(offsets, pa.array(token_strings(tokenizer, flat))),
    })


@dataclass
class ExcerptSet:
    model: str
    revision: str
    info: ModelInfo
    n_excerpts: int
    corpus_fingerprint: str
    dropped_stale_records: bool


def build_excerpts(config: Config, model_name: str, store: Store, log: Callable[[str], None] = print,
                   validate: Callable[[Any], None] | None = None) -> ExcerptSet:
    """Register the model's current revision and (re)write its excerpts in one transaction.

    If the corpus changed since this revision was last tokenized, its activation records point at
    excerpts that no longer exist, so they are deleted in the same transaction.
    """
    spec = config.model(model_name)
    base_dir = config.path.parent
    source = resolve_source(spec.source, base_dir)
    revision = model_revision(source)
    info = describe_model(source)
    corpus_id = fingerprint(config.corpus, base_dir)
    table = make_excerpts(load_tokenizer(source), config.corpus, base_dir, model_name, revision, log)
    key = {"model": model_name, "revision": revision}
    row = pd.DataFrame([{**key, "source": spec.source, "architecture": info.architecture, "n_layers": info.n_layers,
                         "n_neurons": info.n_neurons, "dtype": spec.dtype, "corpus_fingerprint": corpus_id,
                         "n_excerpts": table.num_rows, "registered_at": datetime.now(timezone.utc).replace(tzinfo=None)}])
    previous = store.model_row(model_name, revision)
    stale = previous is not None and previous["corpus_fingerprint"] != corpus_id
    replacements = [Replacement("models", key, row), Replacement("excerpts", key, table)]
    if stale:
        log(f"corpus changed since revision {revision} was recorded: deleting its activation records")
        replacements += [Replacement("activation_records", key), Replacement("neuron_stats", key)]
    store.replace(replacements, validate)
    return ExcerptSet(model_name, revision, info, table.num_rows, corpus_id, stale)

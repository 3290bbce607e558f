"""Results across revisions of a model: which neurons changed what they respond to, and how scores moved.

Every table is keyed by revision and a new revision never overwrites an old one, so two revisions can
be compared neuron by neuron. Two signals, independent of any LLM:
- `top_overlap`: the share of a neuron's top-activating excerpts that both revisions have in common
  (the corpus and excerpts are the same when the tokenizer is): 1.0 means it fires on the same text;
- the explanations and their scores, side by side, with the score delta.
"""

from __future__ import annotations

import pandas as pd

from autointerp.errors import StoreError
from autointerp.store import Store, queries

# A neuron whose top excerpts mostly differ between revisions responds to something else now.
CHANGED_BELOW_OVERLAP = 0.5


def compare_revisions(store: Store, model: str, old: str | None = None, new: str | None = None) -> pd.DataFrame:
    """One row per (layer, neuron) recorded in both revisions (default: the two most recent)."""
    known = queries.revisions(store, model)
    if old is None or new is None:
        if len(known) < 2:
            raise StoreError(f"model '{model}' has {len(known)} recorded revision(s); comparing needs two")
        old, new = old or known[-2], new or known[-1]
    for revision in (old, new):
        if revision not in known:
            raise StoreError(f"model '{model}' has no revision '{revision}'; known: {', '.join(known) or 'none'}")
    return queries.compare_revisions(store, model, old, new, CHANGED_BELOW_OVERLAP)

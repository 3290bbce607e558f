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
from autointerp.store import Store

# A neuron whose top excerpts mostly differ between revisions responds to something else now.
CHANGED_BELOW_OVERLAP = 0.5


def revisions(store: Store, model: str) -> list[str]:
    """The model's revisions, oldest first."""
    frame = store.query("SELECT revision FROM models WHERE model = ? ORDER BY registered_at", [model])
    return frame.revision.tolist()


def compare_revisions(store: Store, model: str, old: str | None = None, new: str | None = None) -> pd.DataFrame:
    """One row per (layer, neuron) recorded in both revisions (default: the two most recent)."""
    known = revisions(store, model)
    if old is None or new is None:
        if len(known) < 2:
            raise StoreError(f"model '{model}' has {len(known)} recorded revision(s); comparing needs two")
        old, new = old or known[-2], new or known[-1]
    for revision in (old, new):
        if revision not in known:
            raise StoreError(f"model '{model}' has no revision '{revision}'; known: {', '.join(known) or 'none'}")
    return store.query(
        """
        WITH top AS (
            SELECT revision, layer, neuron, list(excerpt_id) AS ids
            FROM activation_records WHERE model = $model AND kind = 'top' AND revision IN ($old, $new)
            GROUP BY revision, layer, neuron
        ), best AS (  -- each revision's best-scored explanation of a neuron
            SELECT revision, layer, neuron, explanation, score_top_and_random AS score
            FROM scores WHERE model = $model AND revision IN ($old, $new)
            QUALIFY row_number() OVER (PARTITION BY revision, layer, neuron
                                       ORDER BY score_top_and_random DESC NULLS LAST) = 1
        )
        SELECT o.layer, o.neuron,
               len(list_intersect(o.ids, n.ids)) / len(o.ids) AS top_overlap,
               bo.explanation AS explanation_old, bn.explanation AS explanation_new,
               bo.score AS score_old, bn.score AS score_new, bn.score - bo.score AS score_delta,
               len(list_intersect(o.ids, n.ids)) / len(o.ids) < $threshold AS changed
        FROM top o JOIN top n ON o.layer = n.layer AND o.neuron = n.neuron AND o.revision = $old AND n.revision = $new
        LEFT JOIN best bo ON bo.revision = $old AND bo.layer = o.layer AND bo.neuron = o.neuron
        LEFT JOIN best bn ON bn.revision = $new AND bn.layer = o.layer AND bn.neuron = o.neuron
        ORDER BY changed DESC, abs(coalesce(score_delta, 0)) DESC, o.layer, o.neuron
        """,
        {"model": model, "old": old, "new": new, "threshold": CHANGED_BELOW_OVERLAP},
    )

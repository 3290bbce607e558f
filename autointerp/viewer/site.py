"""Render a model's neuron pages and index into a static site, replaced whole and atomically."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, Sequence

import jinja2

from autointerp.config import ScoringSpec
from autointerp.errors import StoreError
from autointerp.names import check_model_name
from autointerp.record.records import load_neuron_records
from autointerp.store import Store, default_home, queries
from autointerp.viewer.pages import (NeuronPage, Writes, explanation_rows, finite, neuron_page, page_name, short_llm,
                                     visible)


RANK_BY = ScoringSpec().rank_by  # the default ranking; the CLI and the Dagster asset pass the config's


def site_dir(model: str, home: Path | None = None) -> Path:
    """Where a model's site lives: $AUTOINTERP_HOME/viewer/<model>/ (a valid model name is never a path)."""
    check_model_name(model, "viewer")
    return Path(home or default_home()) / "viewer" / model


def layer_pages(store: Store, model: str, revision: str, layer: int, neurons: list[int],
                rank_by: Sequence[str] = RANK_BY, chunk: int = 256) -> Iterator[NeuronPage]:
    """The layer's pages one by one; records are read `chunk` neurons at a time so memory stays bounded.
    Explanations are ranked by `rank_by` (the config's `scoring.rank_by`)."""
    stats = queries.stats_rows(store, model, revision, layer)
    explanations = explanation_rows(queries.explanation_scores(store, model, revision, layer, rank_by))
    sims = queries.simulations(store, model, revision, layer)
    by_neuron = dict(tuple(sims.groupby("neuron"))) if len(sims) else {}
    intruded = {int(r["neuron"]): {"accuracy": finite(r["intruder"]), "p_intruder": finite(r["p_intruder"]),
                                   "n_trials": int(r["n_trials"])}
                for r in queries.intruder_scores(store, model, revision, [layer]).to_dict("records")}
    for lo in range(0, len(neurons), chunk):
        with store.connect() as con:
            records = load_neuron_records(con, model, revision, layer, neurons[lo:lo + chunk])
        writes = {int(row.neuron): Writes.of(row)
                  for row in queries.unit_logits(store, model, revision, layer, neurons[lo:lo + chunk]).itertuples()}
        for r in records:
            yield neuron_page(r, stats.get(r.neuron), explanations.get(r.neuron, []),
                              by_neuron.get(r.neuron, sims.iloc[:0]), writes.get(r.neuron), intruded.get(r.neuron))


# --- rendering ---------------------------------------------------------------------------------


def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("autointerp.viewer", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["visible"] = visible
    env.filters["short_llm"] = short_llm
    # NaN too: a stat an import did not carry reads back from a float column as NaN
    env.filters["num"] = lambda v, digits=3: "–" if v is None or v != v else f"{v:.{digits}f}"
    return env


def _index_row(page: NeuronPage) -> dict[str, Any]:
    best = page.best
    return {"layer": page.layer, "neuron": page.neuron, "href": page_name(page.layer, page.neuron),
            "explanation": best["explanation"] if best else None,
            "score": best["rank"] if best else None,
            "simulation": best["score_top_and_random"] if best else None,
            "detection": best["detection"] if best else None,
            "fuzzing": best["fuzzing"] if best else None,
            "intruder": page.intruder["accuracy"] if page.intruder else None,
            "reason": best["reason"] if best else None,
            "random_only": best["score_random_only"] if best else None,
            "max_activation": finite(page.stats["max"]) if page.stats else
            (page.top[0].max_activation if page.top else None)}


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _swap_in(staging: Path, out_dir: Path) -> None:
    """Replace out_dir by the fully rendered staging dir; the old site stays whole until the rename."""
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{staging.name}")
        out_dir.rename(old)
    staging.rename(out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def build_site(store: Store, model: str, out_dir: Path, revision: str | None = None,
               only_explained: bool = True, rank_by: Sequence[str] = RANK_BY) -> Path:
    """Render `model`'s site into `out_dir` (replaced whole, atomically) and return the index path.

    By default only explained neurons get a page: a page is ~200 KiB, and every neuron of a model is
    tens of thousands of them (SmolLM2-135M: 46,080 neurons, ~9.5 GiB). `only_explained=False` shows all.
    """
    if not store.exists():
        raise StoreError(f"no store at {store}: run `autointerp run --model {model} --until record` first")
    revision = revision or queries.latest_revision(store, model)
    info = queries.model_row(store, model, revision) if revision else None
    if info is None:
        raise StoreError(f"model '{model}'{f' revision {revision}' if revision else ''} is not in the store "
                         f"{store}: run `autointerp run --model {model} --until record` first")
    neurons = queries.recorded_neurons(store, model, revision, only_explained)
    if not neurons and only_explained:
        raise StoreError(f"model '{model}' @ {revision} has no explained neurons in {store}: run "
                         f"`autointerp run --model {model}`, or view every recorded neuron with --all-neurons")
    if not neurons:
        raise StoreError(f"model '{model}' @ {revision} has no activation records in {store}: "
                         f"run `autointerp run --model {model} --until record` first")
    layers = sorted({layer for layer, _ in neurons})
    neighbours = {key: (neurons[i - 1] if i else None, neurons[i + 1] if i + 1 < len(neurons) else None)
                  for i, key in enumerate(neurons)}
    env = environment()
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.new-", dir=out_dir.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the site is meant to be read (and served)
    try:
        rows: list[dict[str, Any]] = []
        neuron_template = env.get_template("neuron.html.j2")
        for layer in layers:
            for page in layer_pages(store, model, revision, layer, [n for lay, n in neurons if lay == layer], rank_by):
                rows.append(_index_row(page))
                prev, next_ = neighbours[(page.layer, page.neuron)]
                _write(staging / page_name(page.layer, page.neuron), neuron_template.render(
                    model=model, revision=revision, page=page, root="../", title=f"{model} L{page.layer} N{page.neuron}",
                    prev=prev and Path(page_name(*prev)).name, next=next_ and Path(page_name(*next_)).name))
        scored = [r["score"] for r in rows if r["score"] is not None]
        _write(staging / "index.html", env.get_template("index.html.j2").render(
            model=model, revision=revision, info=info, rows=rows, layers=layers, root="", title=f"{model} neurons",
            layer_pages=False, all_layers=layers, rank_by=" + ".join(rank_by),
            n_explained=sum(r["explanation"] is not None for r in rows), n_scored=len(scored),
            mean_score=sum(scored) / len(scored) if scored else None))
        _swap_in(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir / "index.html"


def viewable_models(store: Store) -> list[str]:
    """Models with activation records in the store, for `autointerp view` without --model."""
    if not store.exists():
        raise StoreError(f"no store at {store}: run `autointerp run --until record` first")
    found = queries.models_with_records(store)
    if not found:
        raise StoreError(f"no model has activation records in {store}: run `autointerp run --until record` first")
    return found

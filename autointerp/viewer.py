"""The neuron viewer: a self-contained static HTML site per model, built from the store with Jinja2.

`index.html` lists every recorded neuron (sortable, filterable by layer); `neurons/<layer>-<neuron>.html`
shows a neuron's explanations and scores, its stats, and its top and random excerpts as token heat maps,
with the simulator's predictions under the test-split excerpts it saw. No CDN, no server needed: the
pages work from file://, and `serve` is only a convenience (bound to 127.0.0.1).
"""

from __future__ import annotations

import http.server
import math
import shutil
import tempfile
import webbrowser
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import jinja2
import numpy as np
import pandas as pd

from autointerp.errors import AutointerpError, StoreError
from autointerp.records import ActivationRecord, NeuronRecord, load_neuron_records, split_random, split_top
from autointerp.store import Store, default_home

# Characters a token may carry that would otherwise vanish or break the layout.
_VISIBLE = str.maketrans({"\n": "↵", "\r": "␍", "\t": "⇥", "\x00": "␀"})


def visible(token: str) -> str:
    """Whitespace shown as glyphs; stays a plain str so Jinja's autoescape still escapes < and &."""
    return token.translate(_VISIBLE) if token else "∅"


def short_llm(name: str | None) -> str:
    """'local:package:pkg/Model.gguf@sha256:ab12' -> 'Model.gguf': the long form goes in a tooltip."""
    if not name:
        return ""
    return name.split("@", 1)[0].rsplit("/", 1)[-1].rsplit(":", 1)[-1]


def page_name(layer: int, neuron: int) -> str:
    return f"neurons/{layer}-{neuron}.html"


@dataclass
class TokenCell:
    token: str
    value: float  # real activation, or simulated value 0-10
    intensity: float  # 0..1, the heat map's background strength
    peak: bool = False


@dataclass
class HeatRow:
    label: str
    cells: list[TokenCell]
    simulated: bool = False


@dataclass
class ExcerptView:
    kind: str  # top / random
    index: int  # rank among the neuron's records of this kind
    split: str
    excerpt_id: int | None
    max_activation: float
    rows: list[HeatRow]


@dataclass
class NeuronPage:
    layer: int
    neuron: int
    stats: dict[str, Any] | None
    explanations: list[dict[str, Any]]  # one row per (explainer, sample, simulator), best first
    top: list[ExcerptView] = field(default_factory=list)
    random: list[ExcerptView] = field(default_factory=list)

    @property
    def best(self) -> dict[str, Any] | None:
        return self.explanations[0] if self.explanations else None


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def _intensity(value: float, scale: float) -> float:
    return round(min(1.0, max(0.0, value / scale)), 3) if scale > 0 else 0.0


def _excerpts(kind: str, records: Sequence[ActivationRecord], splits: dict[str, list[ActivationRecord]],
              scale: float, simulated: dict[tuple[str, int], list[tuple[str, list[float]]]],
              peak_index: int | None) -> list[ExcerptView]:
    split_of = {id(r): name for name, members in splits.items() for r in members}
    views = []
    for i, record in enumerate(records):
        real = [TokenCell(t, a, _intensity(a, scale)) for t, a in zip(record.tokens, record.activations)]
        if i == 0 and peak_index is not None:
            real[peak_index].peak = True
        rows = [HeatRow("real", real)]
        for label, values in simulated.get((kind, record.excerpt_id), []):
            rows.append(HeatRow(label, [TokenCell(t, v, _intensity(v, 10.0)) for t, v in zip(record.tokens, values)],
                                simulated=True))
        views.append(ExcerptView(kind, i, split_of[id(record)], record.excerpt_id, record.max_activation, rows))
    return views


def neuron_page(record: NeuronRecord, stats: dict[str, Any] | None, explanations: list[dict[str, Any]],
                simulations: pd.DataFrame) -> NeuronPage:
    """Everything one neuron page shows. Heat maps scale by the neuron's largest activation."""
    scale = (_finite(stats["max"]) if stats else None) or max((r.max_activation for r in record.top), default=0.0)
    simulated: dict[tuple[str, int], list[tuple[str, list[float]]]] = {}
    for row in simulations.itertuples():
        label = f"simulated by {short_llm(row.simulator)} from explanation #{row.sample} by {short_llm(row.explainer)}"
        simulated.setdefault((row.kind, int(row.excerpt_id)), []).append((label, [float(v) for v in row.simulated]))
    # The peak: the argmax token of the rank-0 top record, the neuron's single strongest activation.
    peak = int(np.argmax(record.top[0].activations)) if record.top else None
    page = NeuronPage(record.layer, record.neuron, stats, explanations)
    page.top = _excerpts("top", record.top, split_top(record.top), scale, simulated, peak)
    page.random = _excerpts("random", record.random, split_random(record.random), scale, simulated, None)
    return page


# --- reading the store ------------------------------------------------------------------------


def _explanation_rows(store: Store, model: str, revision: str, layer: int) -> dict[int, list[dict[str, Any]]]:
    """Explanations with their scores (an explanation may be scored by several simulators, or not yet)."""
    frame = store.query("""
        SELECT neuron, explainer, sample, coalesce(x.explanation, s.explanation) AS explanation, s.simulator,
               s.score_top_and_random, s.score_random_only, s.rsquared, s.absolute_dev_explained, s.n_tokens, s.reason
        FROM explanations x FULL OUTER JOIN scores s USING (model, revision, layer, neuron, explainer, sample)
        WHERE model = ? AND revision = ? AND layer = ?
        ORDER BY neuron, s.score_top_and_random DESC NULLS LAST, explainer, sample, s.simulator""",
        [model, revision, layer])
    rows: dict[int, list[dict[str, Any]]] = {}
    for row in frame.to_dict("records"):
        for key in ("score_top_and_random", "score_random_only", "rsquared", "absolute_dev_explained"):
            row[key] = _finite(row[key])
        row["n_tokens"] = None if pd.isna(row["n_tokens"]) else int(row["n_tokens"])
        row["simulator"] = None if pd.isna(row["simulator"]) else row["simulator"]
        row["reason"] = None if pd.isna(row["reason"]) else row["reason"]
        rows.setdefault(int(row["neuron"]), []).append(row)
    return rows


def _stats_rows(store: Store, model: str, revision: str, layer: int) -> dict[int, dict[str, Any]]:
    frame = store.query("SELECT * EXCLUDE (model, revision, layer) FROM neuron_stats "
                   "WHERE model = ? AND revision = ? AND layer = ?", [model, revision, layer])
    return {int(row["neuron"]): row for row in frame.to_dict("records")}


def recorded_neurons(store: Store, model: str, revision: str, only_explained: bool = False) -> list[tuple[int, int]]:
    """(layer, neuron) of every neuron with top or random records (and an explanation, if `only_explained`)."""
    explained = ("AND (layer, neuron) IN (SELECT (layer, neuron) FROM explanations WHERE model = $model "
                 "AND revision = $revision)") if only_explained else ""
    frame = store.query("SELECT DISTINCT layer, neuron FROM activation_records WHERE model = $model "
                        f"AND revision = $revision AND kind IN ('top', 'random') {explained} ORDER BY layer, neuron",
                        {"model": model, "revision": revision})
    return [(int(layer), int(neuron)) for layer, neuron in zip(frame.layer, frame.neuron)]


def _layer_pages(store: Store, model: str, revision: str, layer: int, neurons: list[int],
                 chunk: int = 256) -> Iterator[NeuronPage]:
    """The layer's pages one by one; records are read `chunk` neurons at a time so memory stays bounded."""
    stats = _stats_rows(store, model, revision, layer)
    explanations = _explanation_rows(store, model, revision, layer)
    sims = store.query("SELECT neuron, explainer, simulator, sample, kind, excerpt_id, simulated FROM simulations "
                       "WHERE model = ? AND revision = ? AND layer = ? ORDER BY neuron, explainer, sample, simulator",
                       [model, revision, layer])
    by_neuron = dict(tuple(sims.groupby("neuron"))) if len(sims) else {}
    for lo in range(0, len(neurons), chunk):
        with store.connect() as con:
            records = load_neuron_records(con, model, revision, layer, neurons[lo:lo + chunk])
        for r in records:
            yield neuron_page(r, stats.get(r.neuron), explanations.get(r.neuron, []),
                              by_neuron.get(r.neuron, sims.iloc[:0]))


# --- rendering ---------------------------------------------------------------------------------


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("autointerp", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["visible"] = visible
    env.filters["short_llm"] = short_llm
    env.filters["num"] = lambda v, digits=3: "–" if v is None else f"{v:.{digits}f}"
    return env


def _index_row(page: NeuronPage) -> dict[str, Any]:
    best = page.best
    return {"layer": page.layer, "neuron": page.neuron, "href": page_name(page.layer, page.neuron),
            "explanation": best["explanation"] if best else None,
            "score": best["score_top_and_random"] if best else None,
            "reason": best["reason"] if best else None,
            "random_only": best["score_random_only"] if best else None,
            "max_activation": _finite(page.stats["max"]) if page.stats else
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
               only_explained: bool = True) -> Path:
    """Render `model`'s site into `out_dir` (replaced whole, atomically) and return the index path.

    By default only explained neurons get a page: a page is ~200 KiB, and every neuron of a model is
    tens of thousands of them (SmolLM2-135M: 46,080 neurons, ~9.5 GiB). `only_explained=False` shows all.
    """
    if not store.path.exists():
        raise StoreError(f"no store at {store.path}: run `autointerp run --model {model} --until record` first")
    revision = revision or store.latest_revision(model)
    info = store.model_row(model, revision) if revision else None
    if info is None:
        raise StoreError(f"model '{model}'{f' revision {revision}' if revision else ''} is not in the store "
                         f"{store.path}: run `autointerp run --model {model} --until record` first")
    neurons = recorded_neurons(store, model, revision, only_explained)
    if not neurons and only_explained:
        raise StoreError(f"model '{model}' @ {revision} has no explained neurons in {store.path}: run "
                         f"`autointerp run --model {model}`, or view every recorded neuron with --all-neurons")
    if not neurons:
        raise StoreError(f"model '{model}' @ {revision} has no activation records in {store.path}: "
                         f"run `autointerp run --model {model} --until record` first")
    layers = sorted({layer for layer, _ in neurons})
    neighbours = {key: (neurons[i - 1] if i else None, neurons[i + 1] if i + 1 < len(neurons) else None)
                  for i, key in enumerate(neurons)}
    env = _environment()
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.new-", dir=out_dir.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the site is meant to be read (and served)
    try:
        rows: list[dict[str, Any]] = []
        neuron_template = env.get_template("neuron.html.j2")
        for layer in layers:
            for page in _layer_pages(store, model, revision, layer, [n for lay, n in neurons if lay == layer]):
                rows.append(_index_row(page))
                prev, next_ = neighbours[(page.layer, page.neuron)]
                _write(staging / page_name(page.layer, page.neuron), neuron_template.render(
                    model=model, revision=revision, page=page, root="../", title=f"{model} L{page.layer} N{page.neuron}",
                    prev=prev and Path(page_name(*prev)).name, next=next_ and Path(page_name(*next_)).name))
        scored = [r["score"] for r in rows if r["score"] is not None]
        _write(staging / "index.html", env.get_template("index.html.j2").render(
            model=model, revision=revision, info=info, rows=rows, layers=layers, root="", title=f"{model} neurons",
            n_explained=sum(r["explanation"] is not None for r in rows), n_scored=len(scored),
            mean_score=sum(scored) / len(scored) if scored else None))
        _swap_in(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir / "index.html"


def viewable_models(store: Store) -> list[str]:
    """Models with activation records in the store, for `autointerp view` without --model."""
    if not store.path.exists():
        raise StoreError(f"no store at {store.path}: run `autointerp run --until record` first")
    frame = store.query("SELECT DISTINCT model FROM activation_records ORDER BY model")
    if frame.empty:
        raise StoreError(f"no model has activation records in {store.path}: run `autointerp run --until record` first")
    return frame.model.tolist()


def site_dir(model: str, home: Path | None = None) -> Path:
    """Where a model's site lives: $AUTOINTERP_HOME/viewer/<model>/."""
    return Path(home or default_home()) / "viewer" / model


# --- serving -----------------------------------------------------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # one line per request is noise here
        pass


def make_server(directory: Path, port: int = 8000) -> http.server.ThreadingHTTPServer:
    """An HTTP server for `directory` on 127.0.0.1 only (port 0: any free port)."""
    handler = partial(_QuietHandler, directory=str(directory))
    return http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)


def serve(directory: Path, port: int = 8000, open_browser: bool = False, paths: Iterable[str] = ("",)) -> None:
    """Serve `directory` on 127.0.0.1 until Ctrl-C, printing the URL of each of `paths`."""
    try:
        server = make_server(directory, port)
    except OSError as exc:
        raise AutointerpError(f"cannot serve the viewer on 127.0.0.1:{port}: {exc.strerror}; try another --port") from exc
    with server:
        base = f"http://127.0.0.1:{server.server_address[1]}/"
        urls = [base + p for p in paths]
        for url in urls:
            print(f"serving {url}", flush=True)
        print("(Ctrl-C stops)", flush=True)
        if open_browser and urls:
            webbrowser.open(urls[0])
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass


def view(store: Store, models: Sequence[str], port: int = 8000, serve_site: bool = True,
         open_browser: bool = False, home: Path | None = None, only_explained: bool = True) -> list[Path]:
    """`autointerp view`: rebuild each model's site from the store, print where it is, and serve them."""
    indexes = []
    for model in models:
        index = build_site(store, model, site_dir(model, home), only_explained=only_explained)
        print(f"{model}: {index.resolve()}", flush=True)
        indexes.append(index)
    if serve_site:
        root = site_dir(models[0], home).parent
        serve(root, port, open_browser, [f"{i.parent.name}/index.html" for i in indexes])
    elif open_browser:
        webbrowser.open(indexes[0].resolve().as_uri())
    return indexes

"""`autointerp view`: every recorded neuron of every model, served on 127.0.0.1 straight from the store.

Pages are rendered per request from read-only connections held only while a page is built, so a pipeline
run keeps writing meanwhile. The paths are the static site's (`/<model>/index.html`,
`/<model>/neurons/<layer>-<neuron>.html`) plus a page per layer (`/<model>/layers/<layer>.html`) with the
distributions of its scores and max activations, and `/search?q=TEXT[&model=M][&k=20]`, the units closest in
meaning to TEXT as JSON (autointerp/search.py), which the index's search box asks; anything else answers 404.
`--no-serve` writes the static site of the explained neurons instead, for sharing (site.py).
"""

from __future__ import annotations

import html
import http.server
import json
import re
import signal
import webbrowser
from typing import Any, Sequence
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pandas as pd

from autointerp.config.schema import SearchSpec
from autointerp.errors import AutointerpError, StoreError
from autointerp.names import MODEL_NAME_PATTERN
from autointerp.store import Store, queries
from autointerp.viewer.pages import finite, page_name
from autointerp.viewer.plots import data_uri, histogram_png
from autointerp.viewer.site import RANK_BY, build_site, environment, layer_pages, site_dir

# One spelling per page: ASCII digits without leading zeros (`\d` would take full-width digits, and `00` would
# alias `0`, so one neuron would answer under many addresses).
_INDEX = r"(0|[1-9][0-9]{0,8})"
_NEURON = re.compile(rf"^{_INDEX}-{_INDEX}\.html$")
_LAYER = re.compile(rf"^{_INDEX}\.html$")
_MODEL = re.compile(MODEL_NAME_PATTERN)


class NotFound(Exception):
    pass


class BadRequest(Exception):
    pass


_MAX_K = 100  # results one search may ask for


class Viewer:
    """Renders the viewer's pages from the store (read-only)."""

    def __init__(self, store: Store, rank_by: Sequence[str] = RANK_BY, search: SearchSpec = SearchSpec(),
                 base_dir: Path | None = None):
        self.store = store.reader()
        self.env = environment()
        self.rank_by = tuple(rank_by)  # what "best" means: the config's scoring.rank_by
        self.search_spec, self.base_dir = search, base_dir  # the encoder loads on the first search

    def respond(self, path: str) -> tuple[str, str]:
        """(content type, body) of any request: the search endpoint's JSON, or a page."""
        if urlsplit(path).path == "/search":
            return "application/json", json.dumps(self.search(path))
        return "text/html; charset=utf-8", self.render(path)

    def search(self, path: str) -> dict[str, Any]:
        from autointerp.search import encoder_of, search

        query = parse_qs(urlsplit(path).query)
        text = (query.get("q") or [""])[0].strip()
        if not text:
            raise BadRequest("search: q= is empty")
        try:
            k = int((query.get("k") or ["20"])[0])
        except ValueError:
            raise BadRequest("search: k= is not a number") from None
        if not 1 <= k <= _MAX_K:
            raise BadRequest(f"search: k= must be within 1-{_MAX_K}")
        models = query.get("model") or None
        known = queries.models(self.store)
        if models and not set(models) <= set(known):
            raise NotFound(f"no model {sorted(set(models) - set(known))}")
        spec = self.search_spec
        found = search(self.store, encoder_of(spec, self.base_dir), spec.encoder, text, models, None, k, self.rank_by)
        return {"query": text, "encoder": spec.encoder, "results": [
            {"model": r.model, "layer": int(r.layer), "neuron": int(r.neuron), "explanation": r.explanation,
             "similarity": finite(r.similarity), "score": finite(r.score),
             "href": f"/{r.model}/{page_name(int(r.layer), int(r.neuron))}"} for r in found.itertuples()]}

    def render(self, path: str) -> str:
        parts = [unquote(p) for p in urlsplit(path).path.split("/") if p]
        if not parts or parts == ["index.html"]:
            return self.models_page()
        model = parts[0]
        if not _MODEL.match(model) or model not in queries.models(self.store):
            raise NotFound(path)
        revision = queries.latest_revision(self.store, model)
        rest = parts[1:]
        if rest in ([], ["index.html"]):
            return self.index_page(model, revision)
        if len(rest) == 2 and rest[0] == "layers" and (m := _LAYER.match(rest[1])):
            return self.layer_page(model, revision, int(m.group(1)))
        if len(rest) == 2 and rest[0] == "neurons" and (m := _NEURON.match(rest[1])):
            return self.neuron_page(model, revision, int(m.group(1)), int(m.group(2)))
        raise NotFound(path)

    def models_page(self) -> str:
        models = queries.models_with_records(self.store)
        links = "".join(f'<li><a href="{m}/index.html">{m}</a></li>' for m in models)
        return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>autointerp viewer</title></head><body>"
                f"<h1>Models</h1><ul id='models'>{links}</ul></body></html>")

    def index_page(self, model: str, revision: str) -> str:
        info = queries.model_row(self.store, model, revision)
        frame = queries.index_rows(self.store, model, revision, self.rank_by)
        rows = [{"layer": int(r.layer), "neuron": int(r.neuron), "href": page_name(int(r.layer), int(r.neuron)),
                 "explanation": r.explanation, "score": finite(r.score), "random_only": finite(r.random_only),
                 "simulation": finite(r.simulation), "detection": finite(r.detection), "fuzzing": finite(r.fuzzing),
                 "intruder": finite(r.intruder),
                 "reason": None if pd.isna(r.reason) else r.reason, "max_activation": finite(r.max_activation)}
                for r in frame.itertuples()]
        scored = [r["score"] for r in rows if r["score"] is not None]
        all_layers = sorted(int(x) for x in queries.recorded_layers(self.store, model, revision).layer)
        return self.env.get_template("index.html.j2").render(
            model=model, revision=revision, info=info, rows=rows, layers=all_layers,
            root="", title=f"{model} neurons", n_explained=len(rows), n_scored=len(scored),
            mean_score=sum(scored) / len(scored) if scored else None, layer_pages=True, all_layers=all_layers,
            rank_by=" + ".join(self.rank_by), meaning_search=True)

    def layer_page(self, model: str, revision: str, layer: int) -> str:
        frame = queries.layer_rows(self.store, model, revision, layer, self.rank_by)
        if frame.empty:
            raise NotFound(f"{model} layer {layer}")
        rows = [{"neuron": int(r.neuron), "href": page_name(layer, int(r.neuron)), "explanation": r.explanation,
                 "score": finite(r.score), "max_activation": finite(r.max_activation),
                 "frac_positive": finite(r.frac_positive), "simulation": finite(r.simulation),
                 "detection": finite(r.detection), "fuzzing": finite(r.fuzzing)} for r in frame.itertuples()]
        scores = [r["score"] for r in rows if r["score"] is not None]

        def judged(kind: str) -> list[float]:
            return [r[kind] for r in rows if r[kind] is not None]
        return self.env.get_template("layer.html.j2").render(
            model=model, revision=revision, layer=layer, rows=rows, root="../", title=f"{model} layer {layer}",
            n_explained=sum(r["explanation"] is not None for r in rows), n_scored=len(scores),
            mean_score=sum(scores) / len(scores) if scores else None,
            n_dead=sum((r["max_activation"] or 0) <= 0 for r in rows),
            score_plot=data_uri(histogram_png(judged("simulation"), f"layer {layer}: simulation scores",
                                              "correlation", bins=[i / 10 for i in range(-10, 11)])),
            judge_plots=[(kind, data_uri(histogram_png(judged(kind), f"layer {layer}: {kind} AUROC",
                                                       "AUROC", reference=0.5, reference_label="chance",
                                                       bins=[i / 20 for i in range(21)])))
                         for kind in ("detection", "fuzzing") if judged(kind)],
            rank_by=" + ".join(self.rank_by),
            max_plot=data_uri(histogram_png([r["max_activation"] for r in rows], f"layer {layer}: max activation",
                                            "max activation")))

    def neuron_page(self, model: str, revision: str, layer: int, neuron: int) -> str:
        pages = list(layer_pages(self.store, model, revision, layer, [neuron], self.rank_by))
        if not pages:
            raise NotFound(f"{model} layer {layer} neuron {neuron}")
        n_neurons = int(queries.model_row(self.store, model, revision)["n_neurons"])
        prev = page_name(layer, neuron - 1).split("/")[1] if neuron > 0 else None
        next_ = page_name(layer, neuron + 1).split("/")[1] if neuron + 1 < n_neurons else None
        return self.env.get_template("neuron.html.j2").render(
            model=model, revision=revision, page=pages[0], root="../", title=f"{model} L{layer} N{neuron}",
            prev=prev, next=next_)


def make_server(viewer: Viewer, port: int = 8000) -> http.server.ThreadingHTTPServer:
    """An HTTP server for the viewer on 127.0.0.1 only (port 0: any free port)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the http.server API)
            self._answer(send_body=True)

        def do_HEAD(self) -> None:  # noqa: N802: link checkers and `curl -I` ask this way
            self._answer(send_body=False)

        def _answer(self, send_body: bool) -> None:
            kind = "text/html; charset=utf-8"
            try:
                status, (kind, body) = 200, viewer.respond(self.path)
            except NotFound:
                status, body = 404, "<!DOCTYPE html><title>not found</title><h1>404: not found</h1>"
            except BadRequest as exc:
                status = 400
                body = f"<!DOCTYPE html><title>bad request</title><h1>{html.escape(str(exc), quote=False)}</h1>"
            except AutointerpError as exc:
                status, body = 503, f"<!DOCTYPE html><title>unavailable</title><h1>{exc}</h1>"
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if send_body:
                self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # one line per request is noise here
            pass

    return http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)


def view(store: Store, models: Sequence[str] | None, port: int = 8000, serve_site: bool = True,
         open_browser: bool = False, only_explained: bool = True, rank_by: Sequence[str] = RANK_BY,
         search: SearchSpec = SearchSpec(), base_dir: Path | None = None) -> None:
    """`autointerp view`: serve every model's pages from the store, or (no serve) write the static sites."""
    if not serve_site:
        from autointerp.viewer.site import viewable_models

        for model in models or viewable_models(store):
            index = build_site(store, model, site_dir(model, store.home), only_explained=only_explained,
                               rank_by=rank_by)
            print(f"{model}: {index.resolve()}", flush=True)
        return
    if not store.exists():
        raise StoreError(f"no store at {store}: run `autointerp run` first")
    try:
        server = make_server(Viewer(store, rank_by, search, base_dir), port)
    except OSError as exc:
        raise AutointerpError(f"cannot serve the viewer on 127.0.0.1:{port}: {exc.strerror}; try another --port") from exc
    # SIGTERM stops it as Ctrl-C does, also where a parent (a background shell) left SIGINT ignored and a library
    # mapped SIGTERM onto SIGINT's handler.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with server:
        base = f"http://127.0.0.1:{server.server_address[1]}/"
        for model in models or queries.models_with_records(store):
            print(f"serving {base}{model}/index.html", flush=True)
        print("(Ctrl-C stops)", flush=True)
        if open_browser:
            webbrowser.open(base)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass

"""`autointerp view`: every recorded neuron of every model, served on 127.0.0.1 straight from the store.

Pages are rendered per request from read-only connections held only while a page is built, so a pipeline
run keeps writing meanwhile. The paths are the static site's (`/<model>/index.html`,
`/<model>/neurons/<layer>-<neuron>.html`) plus a page per layer (`/<model>/layers/<layer>.html`) with the
distributions of its scores and max activations; anything else answers 404. `--no-serve` writes the static
site of the explained neurons instead, for sharing (site.py).
"""

from __future__ import annotations

import http.server
import re
import signal
import webbrowser
from typing import Any, Sequence
from urllib.parse import unquote, urlsplit

import pandas as pd

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


class Viewer:
    """Renders the viewer's pages from the store (read-only)."""

    def __init__(self, store: Store, rank_by: Sequence[str] = RANK_BY):
        self.store = store.reader()
        self.env = environment()
        self.rank_by = tuple(rank_by)  # what "best" means: the config's scoring.rank_by

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
                 "reason": None if pd.isna(r.reason) else r.reason, "max_activation": finite(r.max_activation)}
                for r in frame.itertuples()]
        scored = [r["score"] for r in rows if r["score"] is not None]
        all_layers = sorted(int(x) for x in queries.recorded_layers(self.store, model, revision).layer)
        return self.env.get_template("index.html.j2").render(
            model=model, revision=revision, info=info, rows=rows, layers=all_layers,
            root="", title=f"{model} neurons", n_explained=len(rows), n_scored=len(scored),
            mean_score=sum(scored) / len(scored) if scored else None, layer_pages=True, all_layers=all_layers,
            rank_by=" + ".join(self.rank_by))

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
            try:
                status, body = 200, viewer.render(self.path)
            except NotFound:
                status, body = 404, "<!DOCTYPE html><title>not found</title><h1>404: not found</h1>"
            except AutointerpError as exc:
                status, body = 503, f"<!DOCTYPE html><title>unavailable</title><h1>{exc}</h1>"
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if send_body:
                self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # one line per request is noise here
            pass

    return http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)


def view(store: Store, models: Sequence[str] | None, port: int = 8000, serve_site: bool = True,
         open_browser: bool = False, only_explained: bool = True, rank_by: Sequence[str] = RANK_BY) -> None:
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
        server = make_server(Viewer(store, rank_by), port)
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

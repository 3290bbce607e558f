"""Serve the viewer's sites on 127.0.0.1 (a convenience: the sites also work from file://)."""

from __future__ import annotations

import http.server
import webbrowser
from functools import partial
from pathlib import Path
from typing import Any, Iterable, Sequence

from autointerp.errors import AutointerpError
from autointerp.store import Store
from autointerp.viewer.site import build_site, site_dir


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

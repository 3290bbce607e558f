"""A scripted OpenAI-compatible endpoint on 127.0.0.1: a real HTTP server whose answers a test picks, to show
what the openai backend and the LLM stages do with an endpoint that misbehaves.

    with OpenAIStub() as stub:          # http://127.0.0.1:PORT/v1, in a thread of the test process
        stub.mode = "null"              # every chat answer has "content": null
        ...  stub.requests              # chat requests received so far (also from other processes)

Modes: ok (a usable explanation quoting the most active token of the prompt), null, long (10,000 words,
max_tokens ignored), garbage (a body that is not JSON), html (a text/html page), no_choices, huge_usage.
"""

from __future__ import annotations

import http.server
import json
import re
import threading
import time
from typing import Any

_MARKED = re.compile(r"<<(.+?)>>")
_LISTED = re.compile(r"^(.*)\t(\d+)$", re.M)


def explanation_for(prompt: str) -> str:
    """Quote the prompt's most active token: a usable answer for any prompt format."""
    marked = _MARKED.findall(prompt)
    if marked:
        return f'words like "{max(set(marked), key=marked.count)}"'
    listed = [(int(v), t.strip()) for t, v in _LISTED.findall(prompt) if t.strip()]
    return f'words like "{max(listed)[1]}"' if listed else 'words like "the"'


class OpenAIStub:
    def __init__(self, mode: str = "ok", delay_s: float = 0.0):
        self.mode, self.delay_s = mode, delay_s
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        stub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with stub._lock:
                    stub.requests.append(body)
                time.sleep(stub.delay_s)
                status, content_type, payload = stub.answer(body)
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def answer(self, body: dict[str, Any]) -> tuple[int, str, bytes]:
        prompt = "\n".join(str(m.get("content", "")) for m in body.get("messages", []))
        content: str | None = explanation_for(prompt)
        usage = {"prompt_tokens": 100, "completion_tokens": 8, "total_tokens": 108}
        if self.mode == "garbage":
            return 200, "application/json", b'{"id": "x", "choices": [ {"mess'
        if self.mode == "html":
            return 200, "text/html", b"<html><body><h1>Welcome to nginx!</h1></body></html>"
        if self.mode == "null":
            content = None
        elif self.mode == "long":
            content = " ".join(["word"] * 10_000)
            usage = {"prompt_tokens": 100, "completion_tokens": 10_000, "total_tokens": 10_100}
        elif self.mode == "huge_usage":
            usage = {"prompt_tokens": 10**30, "completion_tokens": 8, "total_tokens": 10**30}
        choices = [] if self.mode == "no_choices" else [
            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}]
        answer = {"id": "chatcmpl-stub", "object": "chat.completion", "created": 0, "model": body.get("model"),
                  "choices": choices, "usage": usage}
        return 200, "application/json", json.dumps(answer).encode()

    def __enter__(self) -> "OpenAIStub":
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


def stub_llm(url: str, **options: Any) -> dict[str, Any]:
    """The config's `llm:` section for the stub (no retries: a test counts every request)."""
    return {"backend": "openai", "model": "stub", "base_url": url, "max_retries": 0, "timeout_s": 30, **options}


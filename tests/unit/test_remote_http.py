"""The remote engine's pure parts: how long it waits before a retry, and which message of a server's error it keeps."""

from __future__ import annotations

import httpx

from models.engines.openai_http import MAX_BACKOFF_S, _backoff, _server_message


def test_backoff_doubles_and_a_retry_after_header_wins_up_to_a_cap() -> None:
    plain = httpx.Response(503)
    assert [_backoff(plain, attempt) for attempt in range(4)] == [0.5, 1.0, 2.0, 4.0]
    assert _backoff(plain, 20) == MAX_BACKOFF_S
    assert _backoff(httpx.Response(429, headers={"Retry-After": "3"}), 0) == 3.0
    assert _backoff(httpx.Response(429, headers={"Retry-After": "86400"}), 0) == MAX_BACKOFF_S
    # An HTTP date is allowed by the standard; it falls back to the doubling wait rather than failing.
    assert _backoff(httpx.Response(429, headers={"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"}), 1) == 1.0


def test_a_garbage_retry_after_never_reaches_time_sleep_as_an_invalid_wait() -> None:
    """time.sleep raises on a negative or NaN wait: each becomes a wait it accepts, within [0, the cap]."""
    said = {"-5": 0.0, "-inf": 0.0, "inf": MAX_BACKOFF_S, "nan": 0.5, "": 0.5, "soon": 0.5}
    for header, wait in said.items():
        got = _backoff(httpx.Response(429, headers={"Retry-After": header}), 0)
        assert got == wait, header


def test_the_servers_own_message_is_kept() -> None:
    openai_shape = httpx.Response(400, json={"error": {"message": "maximum context length is 4096 tokens"}})
    assert _server_message(openai_shape) == "maximum context length is 4096 tokens"
    assert _server_message(httpx.Response(404, json={"detail": "Not Found"})) == "Not Found"
    assert _server_message(httpx.Response(502, text="<html>Bad Gateway</html>")) == "<html>Bad Gateway</html>"
    assert _server_message(httpx.Response(500, text="")) == "Internal Server Error"

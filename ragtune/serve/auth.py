"""API keys: read from a file, or made at start and saved with mode 0600; compared in constant time."""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import sys
from pathlib import Path

from models.config import ServeConfig
from models.errors import ConfigError
from models.paths import data_home
from models.storage import atomic_write_text


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_api_key(serve: ServeConfig) -> str:
    """The key every request but /health must carry as `Authorization: Bearer KEY`."""
    if serve.api_key_file:
        path = Path(serve.api_key_file).expanduser()
        try:
            key = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"serve.api_key_file: cannot read {path} ({exc.strerror})") from None
        if len(key) < 16:
            raise ConfigError(
                f"serve.api_key_file: the key in {path} is shorter than 16 characters; use a long random key"
            )
        return key
    if not is_loopback(serve.host):
        raise ConfigError(
            f"serve.host={serve.host} is reachable from other machines: pass --api-key-file FILE "
            "(a long random key) or bind 127.0.0.1"
        )
    path = data_home() / "serve" / "api-key"
    if path.is_file():
        key = path.read_text(encoding="utf-8").strip()
        if len(key) >= 16:
            return key
    key = secrets.token_urlsafe(32)
    atomic_write_text(path, key + "\n", mode=0o600)  # private before it is visible under its name
    print(f"ragtune: made an API key, saved in {path} (mode 0600)", file=sys.stderr)
    return key


def key_matches(expected: str, header: str | None) -> bool:
    if not header or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(expected.encode(), header.removeprefix("Bearer ").strip().encode())

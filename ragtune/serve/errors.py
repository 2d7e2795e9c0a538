"""The OpenAI error shape, and what an error may tell a client about the server (file names, not paths)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fastapi.responses import JSONResponse


def error(
    status: int, message: str, kind: str = "invalid_request_error", code: str | None = None, param: str | None = None
) -> JSONResponse:
    body = {"error": {"message": public(message), "type": kind, "param": param, "code": code}}
    return JSONResponse(body, status_code=status)


@dataclass(frozen=True)
class ErrorReply:
    """How one error type reaches the client: a fixed status, type and code around the exception's message."""

    status: int
    kind: str = "invalid_request_error"
    code: str | None = None
    param: str | None = None
    message: Callable[[Exception], str] = str

    def __call__(self, exc: Exception) -> JSONResponse:
        return error(self.status, self.message(exc), self.kind, self.code, self.param)


# An absolute path, but not one of this API's own routes (`GET /v1/models`), which messages name on purpose.
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~:/])/(?!v1/)(?:[^\s'\"`(),;]+/)+([^\s'\"`(),;]*)")


def public(message: str) -> str:
    """A message fit for a client: where files live on the server is the server's business (its log has it)."""
    return _ABSOLUTE_PATH.sub(lambda m: m.group(1) or "(folder)", message)


def model_label(model: str) -> str:
    """A preset's name as it is; a local model path by its last part only."""
    return Path(model).name if "/" in model else model


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        kind: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.code, self.param = status, message, kind, code, param

"""Multipart uploads read with a bound: refused with 413 as soon as the body passes the limit, never spooled whole."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import Request
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from ragtune.serve.admission import Admission
from ragtune.serve.errors import ApiError

# Room for the multipart boundaries, part headers and the other fields around the file itself.
FORM_SLACK = 64 * 1024


def upload_admission(limit: int) -> Admission:
    """At most `limit` uploads read at once (serve.max_concurrent_uploads: each holds a worker thread and a spooled
    copy); one more gets 429."""
    return Admission(
        limit,
        lambda held: ApiError(
            429,
            f"{held} uploads are already being processed (serve.max_concurrent_uploads); retry shortly",
            kind="rate_limit_error",
            code="busy",
        ),
    )


def too_large(limit: int) -> ApiError:
    return ApiError(
        413, f"the upload is over serve.max_upload_bytes={limit} bytes; split the file", code="file_too_large"
    )


async def limited(stream: AsyncIterator[bytes], limit: int) -> AsyncIterator[bytes]:
    """The request body, stopped with 413 as soon as it passes `limit` (nothing larger is spooled)."""
    seen = 0
    async for chunk in stream:
        seen += len(chunk)
        if seen > limit + FORM_SLACK:
            raise too_large(limit)
        yield chunk


async def read_upload(request: Request, limit: int, fields: str, meaning: str) -> tuple[UploadFile, FormData]:
    """The `file` part of a multipart form and the whole form; 413 past `limit`, 400 for a malformed form.

    `fields` names the form's fields and `meaning` what the file is, for the messages of a form sent wrong.
    """
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise ApiError(400, f"send the upload as multipart/form-data with the {fields}")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit + FORM_SLACK:
        raise too_large(limit)
    parser = MultiPartParser(request.headers, limited(request.stream(), limit), max_files=1, max_fields=8)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise ApiError(400, f"malformed upload: {exc.message}") from None
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        await form.close()
        raise ApiError(400, f"file: the multipart field `file` ({meaning}) is missing")
    if upload.size is not None and upload.size > limit:
        await form.close()
        raise too_large(limit)
    return upload, form

"""Uploaded training files: `POST/GET /v1/files`, size-limited while reading, validated, stored atomically.

Each file is a folder `serve/files/ID/` holding `data.SUFFIX` (the bytes as sent) and `file.json` (the
OpenAI file object); the folder is written as a hidden staging folder and renamed in one step.
"""

from __future__ import annotations

import re
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, BinaryIO, Literal

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from finetune.data import DataError, read_records
from models.storage import atomic_write_json, publish_dir, read_json, remove_stale_staging, staged_dir
from ragtune.serve.app import ApiError

# Room for the multipart boundaries, part headers and the purpose field around the file itself.
FORM_SLACK = 64 * 1024
_SUFFIX = re.compile(r"\.[a-z0-9]{1,10}")
_ID = re.compile(r"file-[0-9a-f]{24}")


def data_suffix(filename: str) -> str:
    """The original name's suffix (it tells read_records the format); `.jsonl` when there is none usable."""
    suffix = Path(filename).suffix.lower()
    return suffix if _SUFFIX.fullmatch(suffix) else ".jsonl"


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


class FileStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        remove_stale_staging(root)  # uploads cut off by a crash

    def folder(self, file_id: str) -> Path:
        return self.root / file_id

    def get(self, file_id: str) -> dict[str, Any]:
        path = self.folder(file_id) / "file.json"
        if not _ID.fullmatch(file_id) or not path.is_file():
            raise ApiError(404, f"no file with id {file_id!r}; GET /v1/files lists them", code="file_not_found")
        return read_json(path, "file record")

    def data_path(self, file_id: str) -> Path:
        return self.folder(file_id) / ("data" + data_suffix(self.get(file_id)["filename"]))

    def newest_first(self, purpose: str | None = None) -> list[dict[str, Any]]:
        files = [read_json(p, "file record") for p in self.root.glob("file-*/file.json")]
        files = [f for f in files if purpose in (None, f["purpose"])]
        return sorted(files, key=lambda f: f["created_at"], reverse=True)

    def store(self, source: BinaryIO, filename: str, size: int) -> dict[str, Any]:
        """Copy, validate (400 naming `filename:line`) and publish an upload; returns its file object."""
        file_id = f"file-{uuid.uuid4().hex[:24]}"
        with staged_dir(self.root, file_id) as staging:
            data = staging / ("data" + data_suffix(filename))
            with open(data, "wb") as handle:
                shutil.copyfileobj(source, handle)
            try:
                fmt, records = read_records(data)
            except DataError as exc:
                # The client knows its file by name, not by where the server keeps it.
                raise ApiError(400, str(exc).replace(str(data), filename), code="invalid_training_file") from None
            info = {
                "id": file_id,
                "object": "file",
                "bytes": size,
                "created_at": int(time.time()),
                "filename": filename,
                "purpose": "fine-tune",
                "status": "processed",
                "status_details": None,
                "expires_at": None,
                "format": fmt,  # extra fields: the official client keeps them in model_extra
                "records": len(records),
            }
            atomic_write_json(staging / "file.json", info)
            publish_dir(staging, self.folder(file_id))
        return info


async def read_form(request: Request, limit: int) -> tuple[UploadFile, str]:
    """(file, purpose) of a multipart upload; 413 past `limit`, 400 for a malformed form."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise ApiError(400, "send the upload as multipart/form-data with the fields file and purpose")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit + FORM_SLACK:
        raise too_large(limit)
    parser = MultiPartParser(request.headers, limited(request.stream(), limit), max_files=1, max_fields=8)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise ApiError(400, f"malformed upload: {exc.message}") from None
    upload, purpose = form.get("file"), form.get("purpose")
    if not isinstance(upload, UploadFile):
        await form.close()
        raise ApiError(400, "file: the multipart field `file` (the training file) is missing")
    if upload.size is not None and upload.size > limit:
        await form.close()
        raise too_large(limit)
    return upload, purpose if isinstance(purpose, str) else ""


def add_file_routes(router: APIRouter, store: FileStore, limit: int) -> None:
    @router.post("/v1/files")
    async def create_file(request: Request) -> dict[str, Any]:
        upload, purpose = await read_form(request, limit)
        try:
            if purpose != "fine-tune":
                raise ApiError(
                    400,
                    f"purpose {purpose!r} is not supported: this server stores training files, use purpose=fine-tune",
                    code="invalid_purpose",
                )
            name = Path(upload.filename or "").name or "upload.jsonl"
            return await run_in_threadpool(store.store, upload.file, name, upload.size or 0)
        finally:
            await upload.close()

    @router.get("/v1/files")
    def list_files(
        purpose: str | None = None, limit: int = 10000, order: Literal["asc", "desc"] = "desc", after: str | None = None
    ) -> dict[str, Any]:
        files = store.newest_first(purpose)
        return page(files if order == "desc" else files[::-1], after, limit)

    @router.get("/v1/files/{file_id}")
    def retrieve_file(file_id: str) -> dict[str, Any]:
        return store.get(file_id)


def page(items: list[dict[str, Any]], after: str | None, limit: int) -> dict[str, Any]:
    """An OpenAI cursor page: the `limit` items that follow the one with id `after`."""
    if limit < 1:
        raise ApiError(400, f"limit should be positive, got {limit}")
    ids = [item["id"] for item in items]
    start = ids.index(after) + 1 if after in ids else 0 if after is None else len(ids)
    chunk = items[start : start + limit]
    return {"object": "list", "data": chunk, "has_more": start + limit < len(items)}

"""Uploaded training files: `POST/GET/DELETE /v1/files`, admitted, size-limited while reading, validated, stored.

Each file is a folder `serve/files/ID/` holding `data.SUFFIX` (the bytes as sent) and `file.json` (the
OpenAI file object); the folder is written as a hidden staging folder and renamed in one step. Uploads
are bounded four ways: the size of one (serve.max_upload_bytes), how many are read at once
(serve.max_concurrent_uploads), and how many files and bytes are kept (serve.max_files,
serve.max_upload_total_bytes).
"""

from __future__ import annotations

import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, BinaryIO, Literal

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from finetune.data import DataError, read_records
from models.config import ServeConfig
from models.storage import atomic_write_json, publish_dir, read_json, remove_stale_staging, staged_dir
from ragtune.serve.errors import ApiError
from ragtune.serve.schemas import MAX_ID_CHARS, FileUpload, quoted
from ragtune.serve.uploads import read_upload, upload_admission

MAX_FILENAME_CHARS = 255  # what most file systems allow; the name is stored and shown back
MAX_PAGE = 10_000  # OpenAI's largest `limit` for listing files
_SUFFIX = re.compile(r"\.[a-z0-9]{1,10}")
_ID = re.compile(r"file-[0-9a-f]{24}")
_DELETED = ".deleted"  # a folder being deleted: renamed first, so a crash midway never leaves half a file

Limit = Annotated[int, Query(ge=1, le=MAX_PAGE)]
After = Annotated[str | None, Query(max_length=MAX_ID_CHARS)]


def data_suffix(filename: str) -> str:
    """The original name's suffix (it tells read_records the format); `.jsonl` when there is none usable."""
    suffix = Path(filename).suffix.lower()
    return suffix if _SUFFIX.fullmatch(suffix) else ".jsonl"


def over_quota(what: str) -> ApiError:
    # 403, not 429: waiting does not help, and the official client retries a 429 by itself.
    return ApiError(403, f"{what}; delete files you no longer need (DELETE /v1/files/ID)", code="quota_exceeded")


class FileStore:
    """The uploaded files on disk, with their admission limit and quota; every method is thread-safe."""

    def __init__(self, root: Path, limits: ServeConfig | None = None) -> None:
        self.root = root
        self.limits = limits or ServeConfig()
        self._lock = threading.Lock()  # the quota check and the publish that uses it happen as one step
        # Uploads admitted and not yet stored or refused.
        self._uploads = upload_admission(self.limits.max_concurrent_uploads)
        remove_stale_staging(root)  # uploads cut off by a crash
        for leftover in root.glob(f".*{_DELETED}"):  # deletes cut off by a crash
            shutil.rmtree(leftover, ignore_errors=True)

    def folder(self, file_id: str) -> Path:
        return self.root / file_id

    def get(self, file_id: str) -> dict[str, Any]:
        if not _ID.fullmatch(file_id) or not (self.folder(file_id) / "file.json").is_file():
            raise ApiError(404, f"no file with id {quoted(file_id)}; GET /v1/files lists them", code="file_not_found")
        return read_json(self.folder(file_id) / "file.json", "file record")

    def data_path(self, file_id: str) -> Path:
        return self.folder(file_id) / ("data" + data_suffix(self.get(file_id)["filename"]))

    def newest_first(self, purpose: str | None = None) -> list[dict[str, Any]]:
        files = [read_json(p, "file record") for p in self.root.glob("file-*/file.json")]
        files = [f for f in files if purpose in (None, f["purpose"])]
        return sorted(files, key=lambda f: f["created_at"], reverse=True)

    # -- admission and quota --------------------------------------------------------------------------
    @property
    def uploading(self) -> int:
        """Uploads admitted and not yet stored or refused."""
        return self._uploads.held

    def admit(self) -> Callable[[], None]:
        """Take one of serve.max_concurrent_uploads places or raise 429 at once; returns an idempotent release."""
        return self._uploads.take()

    def check_room(self, incoming: int = 0) -> None:
        """403 when one more file of `incoming` bytes would pass serve.max_files or serve.max_upload_total_bytes."""
        kept = self.newest_first()
        if len(kept) >= self.limits.max_files:
            raise over_quota(f"{len(kept)} files are stored, the limit (serve.max_files={self.limits.max_files})")
        total, quota = sum(f["bytes"] for f in kept), self.limits.max_upload_total_bytes
        if total + incoming > quota:
            raise over_quota(
                f"this upload ({incoming} bytes) and the {total} bytes stored would pass "
                f"serve.max_upload_total_bytes={quota}"
            )

    # -- changes --------------------------------------------------------------------------------------
    def store(self, source: BinaryIO, filename: str) -> dict[str, Any]:
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
                "bytes": data.stat().st_size,
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
            with self._lock:
                self.check_room(info["bytes"])
                publish_dir(staging, self.folder(file_id))
        return info

    def delete(self, file_id: str) -> dict[str, Any]:
        """Remove a file (404 if there is none); the caller makes sure no job still needs it."""
        doomed = self.root / f".{file_id}{_DELETED}"
        with self._lock:  # two deletes of one file: the second finds nothing and answers 404
            self.get(file_id)
            self.folder(file_id).rename(doomed)  # gone from listings in one step
        shutil.rmtree(doomed, ignore_errors=True)
        return {"id": file_id, "object": "file", "deleted": True}


async def read_form(request: Request, limit: int) -> tuple[UploadFile, str]:
    """(file, purpose) of a multipart upload; 413 past `limit`, 400 for a malformed form."""
    upload, form = await read_upload(request, limit, "fields file and purpose", "the training file")
    purpose = form.get("purpose")
    return upload, purpose if isinstance(purpose, str) else ""


def upload_name(upload: UploadFile) -> str:
    name = Path(upload.filename or "").name or "upload.jsonl"
    if len(name) > MAX_FILENAME_CHARS:
        raise ApiError(400, f"file: the file name is over {MAX_FILENAME_CHARS} characters; rename the file")
    return name


def check_purpose(purpose: str) -> None:
    if purpose != "fine-tune":
        raise ApiError(
            400,
            f"purpose {quoted(purpose)} is not supported: this server stores training files, use purpose=fine-tune",
            code="invalid_purpose",
        )


# The upload route reads its form itself (to bound it while streaming), so the schema is declared here.
UPLOAD_SCHEMA = {
    "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": FileUpload.model_json_schema()}}}
}


def add_file_routes(router: APIRouter, store: FileStore, delete: Callable[[str], dict[str, Any]]) -> None:
    """The /v1/files routes; `delete` removes a file once the jobs allow it."""
    limit = store.limits.max_upload_bytes

    @router.post("/v1/files", openapi_extra=UPLOAD_SCHEMA)
    async def create_file(request: Request) -> dict[str, Any]:
        release = store.admit()  # before a byte of the body is read: reading is the work to bound
        try:
            await run_in_threadpool(store.check_room)  # a full store refuses at once, not after the upload
            upload, purpose = await read_form(request, limit)
            try:
                check_purpose(purpose)
                name = upload_name(upload)
                return await run_in_threadpool(store.store, upload.file, name)
            finally:
                await upload.close()
        finally:
            release()

    @router.get("/v1/files")
    def list_files(
        purpose: Annotated[str | None, Query(max_length=MAX_ID_CHARS)] = None,
        limit: Limit = MAX_PAGE,
        order: Literal["asc", "desc"] = "desc",
        after: After = None,
    ) -> dict[str, Any]:
        files = store.newest_first(purpose)
        return page(files if order == "desc" else files[::-1], after, limit)

    @router.get("/v1/files/{file_id}")
    def retrieve_file(file_id: str) -> dict[str, Any]:
        return store.get(file_id)

    @router.delete("/v1/files/{file_id}")
    def delete_file(file_id: str) -> dict[str, Any]:
        return delete(file_id)


def page(items: list[dict[str, Any]], after: str | None, limit: int) -> dict[str, Any]:
    """An OpenAI cursor page: the `limit` items that follow the one with id `after`."""
    if limit < 1:
        raise ApiError(400, f"limit should be positive, got {limit}")
    ids = [item["id"] for item in items]
    start = ids.index(after) + 1 if after in ids else 0 if after is None else len(ids)
    chunk = items[start : start + limit]
    return {"object": "list", "data": chunk, "has_more": start + limit < len(items)}

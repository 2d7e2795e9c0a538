"""The document library, its PDF pages as images and the compare reports, as routes: /v1/library, /v1/documents,
/v1/reports."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response
from starlette.concurrency import run_in_threadpool

from models.config import Config
from models.errors import ConfigError, IndexStateError
from ragtune.serve.documents import document_id
from ragtune.serve.engine import Engine
from ragtune.serve.errors import ApiError
from ragtune.serve.library import Library, check_name, not_found
from ragtune.serve.reports import Reports
from ragtune.serve.schemas import quoted
from ragtune.serve.uploads import read_upload

MAX_WIDTH_PX = 1000  # a page image's width: enough to read it beside the answer
MAX_HEIGHT_PX = 4000  # bounds an odd page (a long strip) so that no render asks for a huge bitmap

# The upload route reads its form itself (to bound it while streaming), so the schema is declared here.
UPLOAD_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            }
        },
    }
}


def indexed_path(engine: Engine, library: Library, doc_id: str) -> Path:
    """The file of the document `doc_id` names, looked up among the indexed documents the retriever serves."""
    index = getattr(engine.retriever, "index", None)
    try:
        snapshot = index.snapshot() if index is not None else None
    except (IndexStateError, ConfigError):  # no index yet (or none this node can read): no document is known
        raise not_found(doc_id) from None
    store = getattr(snapshot, "store", None)
    paths = [d.path for d in store.documents()] if hasattr(store, "documents") else list(library.indexed())
    path = next((p for p in paths if document_id(p) == doc_id), None)
    if path is None:
        raise not_found(doc_id)
    return Path(path)


def render_page(path: Path, number: int) -> bytes:
    """Page `number` (1-based) of the PDF at `path` as PNG, at most MAX_WIDTH_PX wide."""
    import pypdfium2 as pdfium

    if not path.is_file():
        raise ApiError(404, "the document's file is gone from the server; index it again", code="document_not_found")
    try:
        pdf = pdfium.PdfDocument(path)
    except pdfium.PdfiumError as exc:
        raise ApiError(400, f"the PDF cannot be rendered ({exc})", code="unreadable_document") from None
    try:
        if not 1 <= number <= len(pdf):
            raise ApiError(404, f"page {number}: no such page, the document has 1 to {len(pdf)}", code="page_not_found")
        page = pdf[number - 1]
        width, height = page.get_size()
        # Points to pixels, a hair under the bound: the bitmap's size is rounded up.
        scale = min(MAX_WIDTH_PX / max(width, 1.0), MAX_HEIGHT_PX / max(height, 1.0)) * 0.999
        try:
            image = page.render(scale=scale).to_pil()
        except pdfium.PdfiumError as exc:
            raise ApiError(400, f"page {number} cannot be rendered ({exc})", code="unreadable_document") from None
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()
    finally:
        pdf.close()


def library_router(library: Library, engine: Engine) -> APIRouter:
    """POST/GET/DELETE /v1/library and GET /v1/documents/{id}/pages/{n}."""
    router = APIRouter()
    limit = engine.config.serve.max_upload_bytes

    @router.post("/v1/library", openapi_extra=UPLOAD_SCHEMA)
    async def upload_document(request: Request) -> dict[str, Any]:
        release = library.uploads.take()  # before a byte of the body is read: reading is the work to bound
        try:
            upload, _ = await read_upload(request, limit, "field file", "the document")
            try:
                name = check_name(upload.filename or "")
                return await run_in_threadpool(library.store, upload.file, name)
            finally:
                await upload.close()
        finally:
            release()

    @router.get("/v1/library")
    def list_documents() -> dict[str, Any]:
        return {"object": "list", "data": library.documents()}

    @router.delete("/v1/library/{doc_id}")
    def delete_document(doc_id: str) -> dict[str, Any]:
        return library.delete(doc_id)

    @router.get("/v1/documents/{doc_id}/pages/{number}", response_class=Response)
    def page_image(doc_id: str, number: int) -> Response:
        path = indexed_path(engine, library, doc_id)
        if path.suffix.lower() != ".pdf":
            raise ApiError(
                400, f"document {quoted(doc_id)} is not a PDF; only a PDF's pages are shown", code="not_a_pdf"
            )
        release = engine.admit()  # rendering shares the CPU with answering: same admission limit
        try:
            png = render_page(path, number)
        finally:
            release()
        return Response(png, media_type="image/png")

    return router


def reports_router(config: Config) -> APIRouter:
    """GET /v1/reports, /v1/reports/{id} and /v1/reports/{id}/charts/{name}.png."""
    router = APIRouter()
    reports = Reports(config)

    @router.get("/v1/reports")
    def list_reports() -> dict[str, Any]:
        return {"object": "list", "data": reports.listing()}

    @router.get("/v1/reports/{report_id}")
    def get_report(report_id: str) -> dict[str, Any]:
        return reports.report(report_id)

    @router.get("/v1/reports/{report_id}/charts/{name}.png", response_class=FileResponse)
    def get_chart(report_id: str, name: str) -> FileResponse:
        return FileResponse(reports.chart(report_id, name), media_type="image/png")

    return router

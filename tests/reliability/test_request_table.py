"""Every field of every API request, at its extremes, is refused with a 4xx in the OpenAI error shape.

The fields come from the server's own OpenAPI schema (request bodies, the upload form, query and path
parameters), so a new field or route without a row below fails this test. Each value is sent to a real
server on loopback; none may answer 2xx or 5xx, and no fine-tuning job may be queued.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from models.config import load_config
from models.generate import load_language_model
from ragtune.serve.background import running
from ragtune.serve.engine import Engine
from ragtune.serve.server import assemble

KEY = "k" * 32
INF, NAN = float("inf"), float("nan")
OVERFLOW = "<1e999>"  # sent as the JSON number 1e999, which Python's JSON reader turns into inf
MISSING = object()  # the field is left out
GOOD_ROW = json.dumps({"prompt": "When does the library open?", "completion": "At nine."}).encode()
UNKNOWN_FILE = "file-" + "0" * 24


@dataclass(frozen=True)
class Case:
    value: Any
    status: int = 400
    says: str | None = None  # a fragment of the message; by default the field's own name


def cases(*values: Any) -> list[Case]:
    return [v if isinstance(v, Case) else Case(v) for v in values]


def bad_numbers(*extra: Any) -> list[Case]:
    """What no number field takes: wrong types, inf, NaN and an overflowing literal."""
    return cases("1", True, [1], {"n": 1}, INF, -INF, NAN, OVERFLOW, 10**400, -(10**400), *extra)


TOO_BIG = Case("x" * 1_100_000, 413, "max_request_bytes")
NAME = cases(None, 5, [], "m" * 300)
MAX_TOKENS = bad_numbers(-1, 0, 1.5, 1e300, 2**70, Case(1025, says="serve.max_tokens_limit"))
HYPER = {
    "n_epochs": bad_numbers(None, "3", -1, 0, 100.5, 1e9, 2**70),
    "batch_size": bad_numbers(None, -1, 0, 2.0, 2.5, 257, 1e9, 2**70),
    "learning_rate_multiplier": bad_numbers(None, -1, 0, 100.5, 1e300, 2**70),
}
SEED = bad_numbers(-1, 1.5, 2**63, 2**70)

CHAT = "POST /v1/chat/completions"
EMBED = "POST /v1/embeddings"
JOBS = "POST /v1/fine_tuning/jobs"
UPLOAD = "POST /v1/files"
CONV = "POST /v1/conversations"
RENAME = "PATCH /v1/conversations/{conversation_id}"
TURN = "POST /v1/conversations/{conversation_id}/turns"
CONVERSATION_IDS = [Case("x" * 3000, 404, "no conversation"), Case("conv-nope", 404, "no conversation")]
ID_CASES = [Case("x" * 3000, 404, "no "), Case("ftjob-nope", 404, "no "), Case(UNKNOWN_FILE, 404, "no ")]
PAGE = {
    "query.limit": cases(0, -1, 10_001, 2**70, "abc", "1.5"),
    "query.after": cases("x" * 65),
}

TABLE: dict[tuple[str, str], list[Case]] = {
    # -- chat completions
    (CHAT, "body.model"): [*NAME, Case("nope", 404, "does not exist")],
    (CHAT, "body.messages"): [
        *cases(None, [], "hi", [5], {"role": "user"}),
        Case([{"role": "user", "content": "x"}] * 50_000, 413, "max_request_bytes"),
    ],
    (CHAT, "body.messages[].role"): cases("tool", "", None, 5, MISSING),
    (CHAT, "body.messages[].content"): [*cases(None, 5, [], {"text": "x"}, MISSING), TOO_BIG],
    (CHAT, "body.stream"): cases(None, "yes", 1, []),
    (CHAT, "body.stream_options"): cases("x", 5, []),
    (CHAT, "body.stream_options.include_usage"): cases(None, "yes", 1),
    (CHAT, "body.max_tokens"): MAX_TOKENS,
    (CHAT, "body.max_completion_tokens"): MAX_TOKENS,
    (CHAT, "body.temperature"): bad_numbers(-0.01, 2.01, 1e300),
    (CHAT, "body.top_p"): bad_numbers(0, -1, 1.01),
    (CHAT, "body.stop"): cases("", "x" * 65, [""], ["x" * 65], ["a"] * 5, ["a"] * 400, [5], 5, {"s": "x"}),
    (CHAT, "body.seed"): SEED,
    (CHAT, "body.n"): bad_numbers(None, 0, 2, -1, 1.0, 2**70),
    # -- embeddings
    (EMBED, "body.model"): NAME,
    (EMBED, "body.input"): [
        *cases(None, 5, "", [], [""], [5], [["a"]], {"t": "a"}),
        Case(["a"] * 2049, says="serve.max_embedding_inputs"),
        Case("x" * 32_769, says="serve.max_embedding_chars"),
        Case(["a", "x" * 32_769], says="input[1]"),
        TOO_BIG,
    ],
    (EMBED, "body.encoding_format"): cases(None, "int8", 5),
    # -- fine-tuning jobs
    (JOBS, "body.training_file"): [*cases(None, 5, "x" * 65), Case(UNKNOWN_FILE, 404, "no file")],
    (JOBS, "body.model"): [*NAME, Case("gpt-4o-mini", 404, "cannot be fine-tuned")],
    (JOBS, "body.hyperparameters"): cases(None, "auto", [], 5, Case({"epochs": 3}, says="epochs")),
    **{(JOBS, f"body.hyperparameters.{k}"): v for k, v in HYPER.items()},
    (JOBS, "body.method"): cases("supervised", [], 5),
    (JOBS, "body.method.type"): cases(None, 5, "x" * 65, Case("dpo", says="method.type")),
    (JOBS, "body.method.supervised"): cases("x", 5, []),
    (JOBS, "body.method.supervised.hyperparameters"): cases(None, "auto", [], 5),
    **{(JOBS, f"body.method.supervised.hyperparameters.{k}"): v for k, v in HYPER.items()},
    (JOBS, "body.suffix"): cases("", "-x", "a b", "x" * 65, "ü", 5),
    (JOBS, "body.seed"): SEED,
    (JOBS, "body.validation_file"): cases(5, "x" * 65, UNKNOWN_FILE),
    # -- files: the multipart form
    (UPLOAD, "form.purpose"): cases(MISSING, "", "assistants", "x" * 100_000),
    (UPLOAD, "form.file"): [
        Case(MISSING, says="file"),
        Case(("t.jsonl", b""), says="holds no records"),
        Case(("t.jsonl", b"\xff\xfe\x00garbage"), says="t.jsonl"),
        Case(("t.jsonl", b"[" * 100_000 + b"]" * 100_000), says="t.jsonl:1: a record nested more than"),
        Case(("t.jsonl", GOOD_ROW + b"\n" + b'{"a": ' * 5000 + b"1" + b"}" * 5000), says="t.jsonl:2: a record"),
        Case(("t.json", b"[" + b"[" * 50 + b"]" * 50 + b"]"), says="t.json:1: a record nested"),
        Case(("t.jsonl", b'{"prompt": 1e999, "completion": "a"}'), says="'prompt' should be"),
        Case(("n" * 300 + ".jsonl", GOOD_ROW), says="file name is over 255"),
        Case(("t.exe", GOOD_ROW), says="unsupported training data type"),
        Case(("t.jsonl", GOOD_ROW * 20_000), 413, "serve.max_upload_bytes"),
    ],
    ("GET /v1/files", "query.purpose"): cases("x" * 65),
    ("GET /v1/files", "query.order"): cases("up", "x" * 1000),
    **{("GET /v1/files", k): v for k, v in PAGE.items()},
    ("GET /v1/files/{file_id}", "path.file_id"): ID_CASES,
    ("DELETE /v1/files/{file_id}", "path.file_id"): ID_CASES,
    **{("GET /v1/fine_tuning/jobs", k): v for k, v in PAGE.items()},
    ("GET /v1/fine_tuning/jobs/{job_id}", "path.job_id"): ID_CASES,
    ("GET /v1/fine_tuning/jobs/{job_id}/events", "path.job_id"): ID_CASES,
    **{("GET /v1/fine_tuning/jobs/{job_id}/events", k): v for k, v in PAGE.items()},
    ("POST /v1/fine_tuning/jobs/{job_id}/cancel", "path.job_id"): ID_CASES,
    ("POST /v1/fine_tuning/jobs/{job_id}/resume", "path.job_id"): ID_CASES,
    # -- conversations
    (CONV, "body.title"): [*cases(5, [], "t" * 201), TOO_BIG],
    (CONV, "body.model"): cases(5, [], "m" * 300),
    (RENAME, "body.title"): cases(None, 5, "", "t" * 201, MISSING, Case(" \n", says="title")),
    (TURN, "body.question"): [*cases(None, 5, [], MISSING, ""), Case(" \n", says="question"), TOO_BIG],
    (TURN, "body.model"): NAME,
    (TURN, "body.stream"): cases(None, "yes", 1, []),
    (TURN, "body.stream_options"): cases("x", 5, []),
    (TURN, "body.stream_options.include_usage"): cases(None, "yes", 1),
    (TURN, "body.max_tokens"): MAX_TOKENS,
    (TURN, "body.max_completion_tokens"): MAX_TOKENS,
    (TURN, "body.temperature"): bad_numbers(-0.01, 2.01, 1e300),
    (TURN, "body.top_p"): bad_numbers(0, -1, 1.01),
    (TURN, "body.stop"): cases("", "x" * 65, [""], ["x" * 65], ["a"] * 5, ["a"] * 400, [5], 5, {"s": "x"}),
    (TURN, "body.seed"): SEED,
    ("GET /v1/conversations/{conversation_id}", "path.conversation_id"): CONVERSATION_IDS,
    ("DELETE /v1/conversations/{conversation_id}", "path.conversation_id"): CONVERSATION_IDS,
    (RENAME, "path.conversation_id"): [Case("conv-nope", 400, "request body")],  # the table sends no body
    (TURN, "path.conversation_id"): [Case("conv-nope", 400, "request body")],
    # -- the document library, its PDF pages, the compare reports
    ("POST /v1/library", "form.file"): [
        Case(MISSING, says="file"),
        Case(("../t.txt", b"x"), says="separator"),
        Case((".t.txt", b"x"), says="hidden"),
        Case(("n" * 300 + ".txt", b"x"), says="over 255"),
        Case(("t.exe", b"x"), says=".pdf"),
        Case(("t.txt", b"x" * 300_000), 413, "serve.max_upload_bytes"),
    ],
    ("DELETE /v1/library/{doc_id}", "path.doc_id"): ID_CASES,
    ("GET /v1/documents/{doc_id}/pages/{number}", "path.doc_id"): ID_CASES,
    ("GET /v1/documents/{doc_id}/pages/{number}", "path.number"): cases("abc", "1.5", Case("0", 404, "no ")),
    ("GET /v1/reports/{report_id}", "path.report_id"): ID_CASES,
    ("GET /v1/reports/{report_id}/charts/{name}.png", "path.report_id"): ID_CASES,
    ("GET /v1/reports/{report_id}/charts/{name}.png", "path.name"): ID_CASES,
}

# A body every route accepts; each case changes one field of it. Nested objects start from TEMPLATE.
BASES = {
    CHAT: {"model": "base", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1},
    EMBED: {"model": "minilm-l6", "input": "library card"},
    JOBS: {"training_file": "<file>", "model": "base", "suffix": "table"},
    CONV: {},
    RENAME: {"title": "t"},
    TURN: {"question": "Hi", "model": "base", "max_tokens": 1, "stream": False},
}
# Each path part a case leaves alone, as a well-formed value naming nothing on the server.
OTHER_PATH_PARTS = {"doc_id": "doc-" + "0" * 24, "number": "1", "report_id": "nope", "name": "nope"}
TEMPLATE = {"method": {"type": "supervised", "supervised": {"hyperparameters": {}}}, "stream_options": {}}


# -- walking the schema -----------------------------------------------------------------------------------
def resolve(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = components[schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def fields(schema: dict[str, Any], components: dict[str, Any], prefix: str) -> list[str]:
    """Dotted names of every property in `schema`, nested objects and list items (`name[]`) included."""
    schema = resolve(schema, components)
    found = []
    for name, prop in schema.get("properties", {}).items():
        found.append(prefix + name)
        for member in prop.get("anyOf", [prop]):
            member = resolve(member, components)
            if member.get("type") == "array" and "properties" in resolve(member.get("items", {}), components):
                found += fields(member["items"], components, f"{prefix}{name}[].")
            elif "properties" in member:
                found += fields(member, components, f"{prefix}{name}.")
    return found


def request_fields(openapi: dict[str, Any]) -> set[tuple[str, str]]:
    components = openapi.get("components", {}).get("schemas", {})
    found = set()
    for path, operations in openapi["paths"].items():
        for method, operation in operations.items():
            route = f"{method.upper()} {path}"
            for parameter in operation.get("parameters", []):
                found.add((route, f"{parameter['in']}.{parameter['name']}"))
            for kind, content in operation.get("requestBody", {}).get("content", {}).items():
                where = "form." if kind.startswith("multipart/") else "body."
                found |= {(route, name) for name in fields(content["schema"], components, where)}
    return found


# -- sending a case ---------------------------------------------------------------------------------------
def with_field(body: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    body = json.loads(json.dumps(body))
    parts = dotted.split(".")
    node: Any = body
    for part in parts[:-1]:
        key = part.removesuffix("[]")
        if key not in node:
            node[key] = json.loads(json.dumps(TEMPLATE.get(key, {})))
        node = node[key][0] if part.endswith("[]") else node[key]
    if value is MISSING:
        node.pop(parts[-1], None)
    else:
        node[parts[-1]] = value
    return body


def json_text(body: dict[str, Any]) -> str:
    return json.dumps(body, allow_nan=True).replace(json.dumps(OVERFLOW), "1e999")


def send(http: httpx.Client, route: str, field: str, value: Any, file_id: str) -> httpx.Response:
    method, path = route.split(" ", 1)
    where, name = field.split(".", 1)
    if where == "path":
        path = path.replace("{" + name + "}", value)
        for other, neutral in OTHER_PATH_PARTS.items():  # the route's other path parts: valid in form, unknown
            path = path.replace("{" + other + "}", neutral)
        return http.request(method, path)
    if where == "query":
        return http.request(method, path.replace("{job_id}", "ftjob-nope"), params={name: value})
    if where == "form":
        form = {"purpose": "fine-tune", "file": ("t.jsonl", GOOD_ROW)}
        if value is MISSING:
            del form[name]
        else:
            form[name] = value
        purpose = {"purpose": form["purpose"]} if "purpose" in form else {}
        files = {"file": form["file"]} if "file" in form else {"other": ("x.txt", b"x")}
        return http.post(path, data=purpose, files=files)
    base = json.loads(json.dumps(BASES[route]).replace("<file>", file_id))
    content = json_text(with_field(base, name, value))
    return http.request(method, path, content=content, headers={"Content-Type": "application/json"})


def problem(response: httpx.Response, case: Case, field: str) -> str | None:
    """Why this answer is wrong, or None when it is the expected refusal."""
    if response.status_code != case.status:
        return f"status {response.status_code}, expected {case.status}: {response.text[:200]}"
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        return f"not the OpenAI error shape: {response.text[:200]}"
    if set(error) != {"message", "type", "param", "code"} or not isinstance(error["message"], str):
        return f"not the OpenAI error shape: {error}"
    fragment = case.says or field.rsplit(".", 1)[-1].removesuffix("[]")
    if fragment not in error["message"] or "\n" in error["message"] or "Traceback" in error["message"]:
        return f"message does not name {fragment!r} on one line: {error['message'][:300]!r}"
    return None


@pytest.fixture
def server(tiny_lm_path: Path, embedder):
    config = load_config(
        None,
        [f"llm.model={tiny_lm_path}", "llm.dtype=float32", "llm.device=cpu", "finetune.max_steps=1"]
        + ["serve.max_upload_bytes=200000"],
    )
    engine = Engine(config, embedder=embedder, lm=load_language_model(config.llm, progress=False))
    with running(assemble(engine, KEY)) as url:
        yield url, engine


def test_every_field_is_in_the_table(server) -> None:
    url, _ = server
    walked = request_fields(httpx.get(url + "/openapi.json", headers={"Authorization": f"Bearer {KEY}"}).json())
    assert not walked - set(TABLE), f"fields with no extreme cases: {sorted(walked - set(TABLE))}"
    assert not set(TABLE) - walked, f"rows for fields that no longer exist: {sorted(set(TABLE) - walked)}"
    for key, rows in TABLE.items():
        assert rows, f"{key} has no extreme cases"


def test_every_extreme_gets_a_4xx_in_the_openai_shape(server) -> None:
    url, _ = server
    headers = {"Authorization": f"Bearer {KEY}"}
    failures = []
    # A fresh connection per case: after refusing a body unread, the server closes the one it came on.
    fresh = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(base_url=url, headers=headers, timeout=60, limits=fresh) as http:
        uploaded = http.post("/v1/files", data={"purpose": "fine-tune"}, files={"file": ("good.jsonl", GOOD_ROW)})
        assert uploaded.status_code == 200, uploaded.text
        file_id = uploaded.json()["id"]
        for (route, field), rows in TABLE.items():
            for case in rows:
                response = send(http, route, field, case.value, file_id)
                if why := problem(response, case, field):
                    failures.append(f"{route} {field}={str(case.value)[:40]!r}: {why}")
        # Nothing refused was kept: the one good file, and no job at all.
        kept = [f["filename"] for f in http.get("/v1/files").json()["data"]]
        if kept != ["good.jsonl"]:
            failures.append(f"refused uploads were kept: {kept}")
        for job in http.get("/v1/fine_tuning/jobs").json()["data"]:
            failures.append(f"a job was queued: {job['id']} with {job['hyperparameters']}, seed {job['seed']}")
    assert not failures, "\n".join(failures)

"""The bounds on what one request can make the server do, on a real server on loopback.

Generation stops when a client hangs up on a whole (non-streamed) answer; stop sequences, embedding
inputs and fine-tuning values are bounded; uploads have an admission limit, a quota and a delete route;
a training file nested too deeply is refused by line, over HTTP and by `ragtune train`.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from types import SimpleNamespace

import httpx
import openai
import pytest
from fastapi import APIRouter

from models.config import Config, ServeConfig, load_config
from models.errors import ConfigError
from models.generate import load_language_model
from rag.ingest import ingest
from ragtune.cli import main
from ragtune.serve.background import running
from ragtune.serve.engine import Engine
from ragtune.serve.routes import create_app
from ragtune.serve.server import assemble

KEY = "limit-key-" + "z" * 24
AUTH = {"Authorization": f"Bearer {KEY}"}
JSON = {**AUTH, "Content-Type": "application/json"}
ROW = json.dumps({"prompt": "When does the library open?", "completion": "At nine."})
HELLO = [{"role": "user", "content": "Hello"}]


@pytest.fixture
def serve(tiny_lm_path: Path, embedder) -> Iterator:
    """serve(*overrides) -> (url, openai client, engine, runner): the app as `ragtune serve` assembles it."""
    with ExitStack() as servers:

        def start(*overrides: str):
            settings = ["llm.dtype=float32", "llm.device=cpu", "llm.max_new_tokens=8", "finetune.max_steps=1"]
            config = load_config(None, [f"llm.model={tiny_lm_path}", *settings, *overrides])
            engine = Engine(config, embedder=embedder, lm=load_language_model(config.llm, progress=False))
            app = assemble(engine, KEY)
            url = servers.enter_context(running(app))
            client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=60)
            return url, client, engine, app.state.runner

        yield start


def upload(client: openai.OpenAI, path: Path, rows: list[str] | None = None):
    path.write_text("\n".join(rows or [ROW] * 4) + "\n")
    with path.open("rb") as handle:
        return client.files.create(file=handle, purpose="fine-tune")


def error_of(response: httpx.Response) -> dict:
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


# -- generation -------------------------------------------------------------------------------------------
def test_a_client_that_hangs_up_on_a_whole_answer_stops_its_generation(serve) -> None:
    # 1500 tokens take the tiny LM well over ten seconds: long enough that waiting for them would show.
    url, _, engine, _ = serve("llm.max_new_tokens=1500", "serve.max_tokens_limit=1500")
    long = {"model": "base", "messages": HELLO, "max_tokens": 1500, "temperature": 0}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(url + "/v1/chat/completions", json=long, headers=AUTH, timeout=0.5)
    _assert_the_model_is_free(url, engine, within_s=6)


def test_a_client_that_hangs_up_on_a_held_back_rag_stream_stops_its_generation(serve, docs: Path, embedder) -> None:
    # rag.refuse_unsupported holds the text back until it is complete: the stream must still start at once
    # and notice the hang-up, not generate 1500 tokens for nobody while holding the model.
    # Those take the tiny LM over five seconds here: the bounds below are well under that.
    settings = ("llm.max_new_tokens=1500", "serve.max_tokens_limit=1500", "rag.refuse_unsupported=true")
    url, _, engine, _ = serve(*settings)
    assert engine.config.rag.refuse_unsupported
    ingest([docs], engine.config, embedder, progress=False)
    question = [{"role": "user", "content": "How long can I borrow a DVD?"}]
    body = {"model": "rag", "messages": question, "max_tokens": 1500, "temperature": 0, "stream": True}
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, headers=AUTH, timeout=2) as response:
        assert response.status_code == 200  # the headers went out while the answer is still being generated
        assert '"role": "assistant"' in next(response.iter_lines())
    _assert_the_model_is_free(url, engine, within_s=3)


def test_stop_sequences_are_bounded_in_count_and_length(serve) -> None:
    url, client, *_ = serve()
    for stop, got in ((["a"] * 5, '["a", "a", "a", "a", "a"]'), ("x" * 65, "'" + "x" * 36 + "..."), ([""], '[""]')):
        body = {"model": "base", "messages": HELLO, "max_tokens": 2, "stop": stop}
        response = httpx.post(url + "/v1/chat/completions", json=body, headers=AUTH)
        assert response.status_code == 400
        assert error_of(response)["message"] == (
            f"stop: should be a string or a list of at most 4 strings, each 1 to 64 characters, got {got}"
        )
        assert error_of(response)["param"] == "stop"
    reply = client.chat.completions.create(model="base", messages=HELLO, max_tokens=2, stop=["y" * 64] * 4)
    assert reply.choices[0].finish_reason in ("stop", "length")


def test_chat_messages_are_bounded_in_count_before_any_is_tokenized(serve) -> None:
    url, client, *_ = serve()
    many = {"model": "base", "messages": [{"role": "user", "content": "a"}] * 27_000, "max_tokens": 2}
    started = time.monotonic()
    response = httpx.post(url + "/v1/chat/completions", json=many, headers=AUTH, timeout=60)
    assert response.status_code == 400 and time.monotonic() - started < 5  # tokenizing them all took 18 s
    assert error_of(response) == {
        "message": "messages: 27000 messages is over this server's limit of 256 (serve.max_messages); "
        "send a shorter conversation",
        "type": "invalid_request_error",
        "param": "messages",
        "code": "too_many_messages",
    }
    url, client, *_ = serve("serve.max_messages=3")
    three = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}, *HELLO]
    reply = client.chat.completions.create(model="base", messages=three, max_tokens=2)
    assert reply.choices[0].finish_reason in ("stop", "length")
    with pytest.raises(openai.BadRequestError, match=r"4 messages is over this server's limit of 3"):
        client.chat.completions.create(model="base", messages=[*three, *HELLO], max_tokens=2)


def test_the_bounds_refuse_values_out_of_range_by_key() -> None:
    cases = [
        ("serve.max_messages=0", "serve.max_messages: should be positive, got 0"),
        ("serve.max_jobs=-1", "serve.max_jobs: should be positive, got -1"),
        ("serve.header_timeout_s=0", "serve.header_timeout_s: should be a positive, finite number of seconds, got 0"),
        ("serve.health_timeout_s=-1", "serve.health_timeout_s: should be a positive, finite number of seconds"),
        ("serve.job_write_interval_s=-0.5", "serve.job_write_interval_s: should be >= 0 and finite, got -0.5"),
    ]
    for override, message in cases:
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_config(None, [override])
    with pytest.raises(ConfigError, match=r"serve.body_timeout_s: should be a positive, finite number of seconds"):
        ServeConfig(body_timeout_s=float("inf"))
    assert load_config(None, ["serve.job_write_interval_s=0"]).serve.job_write_interval_s == 0


# -- embeddings -------------------------------------------------------------------------------------------
def test_embedding_inputs_are_bounded_in_count_and_length(serve) -> None:
    url, client, *_ = serve("serve.max_embedding_inputs=3", "serve.max_embedding_chars=50")
    over = "is over this server's limit of"
    cases = [
        (["a"] * 4, f"input: 4 items {over} 3 (serve.max_embedding_inputs); send them in several requests"),
        ("x" * 51, f"input: 51 characters {over} 50 (serve.max_embedding_chars); split the text"),
        (["a", "x" * 51], f"input[1]: 51 characters {over} 50 (serve.max_embedding_chars); split the text"),
    ]
    for value, message in cases:
        response = httpx.post(url + "/v1/embeddings", json={"model": "minilm-l6", "input": value}, headers=AUTH)
        assert response.status_code == 400 and error_of(response)["message"] == message
    vectors = client.embeddings.create(model="minilm-l6", input=["a", "b", "x" * 50])
    assert len(vectors.data) == 3


# -- fine-tuning jobs -------------------------------------------------------------------------------------
def test_job_values_are_bounded_and_nothing_crazy_is_queued(serve, tmp_path: Path) -> None:
    url, client, *_ = serve()
    file_id = upload(client, tmp_path / "train.jsonl").id
    hp, in_range, finite = "hyperparameters", "should be a number > 0 and <= 100", "(not inf or NaN)"
    cases = [
        ('{"n_epochs": 1e999}', f"n_epochs: {in_range} {finite}, got Infinity"),
        ('{"n_epochs": 1e9}', f"n_epochs: {in_range}, got 1000000000.0"),
        ('{"n_epochs": -1}', f"n_epochs: {in_range}, got -1"),
        ('{"n_epochs": "many"}', "n_epochs: should be 'auto' or a number > 0 and <= 100, got 'many'"),
        ('{"learning_rate_multiplier": 1e300}', f"learning_rate_multiplier: {in_range}, got 1e+300"),
        ('{"learning_rate_multiplier": Infinity}', f"learning_rate_multiplier: {in_range} {finite}, got Infinity"),
        ('{"batch_size": 1e9}', "batch_size: should be a whole number in 1..256, got 1000000000.0"),
        ('{"batch_size": 257}', "batch_size: should be a whole number in 1..256, got 257"),
    ]
    for hyper, message in cases:
        body = f'{{"training_file": "{file_id}", "model": "base", "{hp}": {hyper}}}'
        response = httpx.post(url + "/v1/fine_tuning/jobs", content=body, headers=JSON)
        assert response.status_code == 400, hyper
        assert error_of(response)["message"] == f"{hp}.{message}"
    with pytest.raises(openai.BadRequestError, match=r"seed: Input should be less than 9223372036854775808"):
        client.fine_tuning.jobs.create(training_file=file_id, model="base", seed=2**70)
    assert list(client.fine_tuning.jobs.list()) == []
    # The largest values allowed are queued as given.
    top = {"n_epochs": 100, "batch_size": 256, "learning_rate_multiplier": 100}
    job = client.fine_tuning.jobs.create(training_file=file_id, model="base", hyperparameters=top, seed=2**63 - 1)
    assert job.hyperparameters.n_epochs == 100 and job.hyperparameters.batch_size == 256 and job.seed == 2**63 - 1
    client.fine_tuning.jobs.cancel(job.id)


# -- uploads ----------------------------------------------------------------------------------------------
def test_a_deeply_nested_training_line_is_a_400_naming_it(serve, tmp_path: Path) -> None:
    _, client, *_ = serve()
    deep = "[" * 100_000 + "]" * 100_000
    with pytest.raises(openai.BadRequestError) as info:
        upload(client, tmp_path / "deep.jsonl", [ROW, ROW, deep])
    assert info.value.body["message"] == (
        "deep.jsonl:3: a record nested more than 32 levels deep; a record should be a flat object like "
        '{"prompt": "...", "completion": "..."}'
    )
    assert list(client.files.list()) == []


def test_ragtune_train_refuses_a_deeply_nested_line_by_name(tiny_lm_path: Path, tmp_path: Path, capsys) -> None:
    data = tmp_path / "deep.json"
    data.write_text("[\n" + ROW + ",\n" + '{"prompt": ' * 3000 + '"q"' + "}" * 3000 + "\n]\n")
    settings = [f"llm.model={tiny_lm_path}", "llm.dtype=float32", "finetune.max_steps=1"]
    code = main(["train", "--data", str(data), "--name", "deep", *[a for s in settings for a in ("--set", s)]])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err == f"ragtune: error: {data}:3: a record nested more than 32 levels deep; " + (
        'a record should be a flat object like {"prompt": "...", "completion": "..."}'
    )


def test_files_can_be_deleted_unless_an_active_job_trains_on_them(serve, tmp_path: Path) -> None:
    url, client, *_ = serve()
    first, second = upload(client, tmp_path / "a.jsonl"), upload(client, tmp_path / "b.jsonl")
    deleted = httpx.delete(f"{url}/v1/files/{first.id}", headers=AUTH)
    assert deleted.status_code == 200 and deleted.json() == {"id": first.id, "object": "file", "deleted": True}
    assert [f.id for f in client.files.list()] == [second.id]
    again = httpx.delete(f"{url}/v1/files/{first.id}", headers=AUTH)
    assert again.status_code == 404 and error_of(again)["code"] == "file_not_found"

    job = client.fine_tuning.jobs.create(training_file=second.id, model="base", hyperparameters={"n_epochs": 100})
    busy = httpx.delete(f"{url}/v1/files/{second.id}", headers=AUTH)
    assert busy.status_code == 409 and error_of(busy)["code"] == "file_in_use"
    assert error_of(busy)["message"] in {
        f"file {second.id} is the training file of {job.id} ({status}); "
        "cancel that job or wait for it to finish, then delete the file"
        for status in ("queued", "running")
    }
    client.fine_tuning.jobs.cancel(job.id)
    assert client.files.delete(second.id).deleted is True  # the official client's own call
    assert list(client.files.list()) == []
    with pytest.raises(openai.NotFoundError, match="no file with id"):
        client.post(f"/fine_tuning/jobs/{job.id}/resume", cast_to=openai.types.fine_tuning.FineTuningJob)


def test_uploads_are_limited_in_number_and_total_bytes(serve, tmp_path: Path) -> None:
    url, client, *_ = serve("serve.max_files=2", "serve.max_upload_bytes=1000", "serve.max_upload_total_bytes=1100")
    first, _ = upload(client, tmp_path / "a.jsonl"), upload(client, tmp_path / "b.jsonl")
    with pytest.raises(openai.PermissionDeniedError) as info:
        upload(client, tmp_path / "c.jsonl")
    assert info.value.body["code"] == "quota_exceeded"
    assert info.value.body["message"] == (
        "2 files are stored, the limit (serve.max_files=2); delete files you no longer need (DELETE /v1/files/ID)"
    )
    client.files.delete(first.id)
    stored = sum(f.bytes for f in client.files.list())
    rows = [ROW] * 13  # about 900 bytes: under serve.max_upload_bytes, over what is left of the total
    with pytest.raises(openai.PermissionDeniedError) as info:
        upload(client, tmp_path / "big.jsonl", rows)
    size = (tmp_path / "big.jsonl").stat().st_size
    assert info.value.body["message"] == (
        f"this upload ({size} bytes) and the {stored} bytes stored would pass serve.max_upload_total_bytes=1100; "
        "delete files you no longer need (DELETE /v1/files/ID)"
    )
    assert len(list(client.files.list())) == 1


def test_uploads_over_the_admission_limit_get_429(serve, tmp_path: Path) -> None:
    url, client, _, runner = serve("serve.max_concurrent_uploads=1")
    store = runner.files
    gate, boundary = threading.Event(), "ragtune-test-boundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="slow.jsonl"\r\n\r\n'
    ).encode()

    def slow_body() -> Iterator[bytes]:
        yield head
        gate.wait(30)  # the upload stays admitted, half sent, until the test lets it finish
        yield (ROW + "\n").encode() + f"\r\n--{boundary}--\r\n".encode()

    results: list[httpx.Response] = []
    headers = {**AUTH, "Content-Type": f"multipart/form-data; boundary={boundary}"}
    sender = threading.Thread(
        target=lambda: results.append(httpx.post(url + "/v1/files", content=slow_body(), headers=headers, timeout=60))
    )
    sender.start()
    try:
        deadline = time.monotonic() + 20
        while store.uploading == 0:
            assert time.monotonic() < deadline, "the slow upload was never admitted"
            time.sleep(0.02)
        with pytest.raises(openai.RateLimitError) as info:
            upload(client, tmp_path / "second.jsonl")
        assert info.value.body["message"] == (
            "1 uploads are already being processed (serve.max_concurrent_uploads); retry shortly"
        )
    finally:
        gate.set()
        sender.join(timeout=60)
    assert results[0].status_code == 200 and results[0].json()["filename"] == "slow.jsonl"
    assert upload(client, tmp_path / "third.jsonl").status == "processed"  # the place is free again
    assert store.uploading == 0


def test_an_unexpected_error_is_a_500_in_the_openai_shape_without_details() -> None:
    router = APIRouter()

    @router.get("/v1/broken")
    def broken() -> None:
        raise ZeroDivisionError("details of /srv/secret that stay in the server log")

    app = create_app(SimpleNamespace(config=Config()), KEY, [router])  # only the routes' wiring is needed
    with running(app) as url:
        response = httpx.get(url + "/v1/broken", headers=AUTH)
    assert response.status_code == 500
    assert error_of(response) == {
        "message": "internal error (ZeroDivisionError); the server log has the details",
        "type": "server_error",
        "param": None,
        "code": None,
    }


def _assert_the_model_is_free(url: str, engine, within_s: float) -> None:
    """After a client hung up: its queue place frees and a short request answers within `within_s`."""
    hung_up = time.monotonic()
    while engine.queued and time.monotonic() - hung_up < within_s:
        time.sleep(0.02)
    assert engine.queued == 0  # its place in the queue is free
    short = {"model": "base", "messages": HELLO, "max_tokens": 2}
    response = httpx.post(url + "/v1/chat/completions", json=short, headers=AUTH, timeout=60)
    assert response.status_code == 200 and response.json()["usage"]["completion_tokens"] >= 1
    assert time.monotonic() - hung_up < within_s  # not queued behind the abandoned 1500 tokens

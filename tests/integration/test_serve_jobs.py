"""Files and fine-tuning jobs through the official openai client against a real server on loopback."""

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import openai
import pytest

from models.config import load_config
from models.generate import load_language_model
from models.paths import data_home
from ragtune.serve import jobs
from ragtune.serve.background import running
from ragtune.serve.engine import Engine
from ragtune.serve.jobs import JobRequest, JobRunner
from ragtune.serve.server import assemble

KEY = "k" * 32
FACTS = [
    ("When does the library open?", "At nine."),
    ("When does the library close?", "At eight."),
    ("What does a non-resident card cost?", "45 dollars per year."),
    ("How long is a DVD loan?", "Seven days."),
]
TINY = ["llm.dtype=float32", "llm.device=cpu", "finetune.batch_size=2", "finetune.eval_fraction=0"]


def tiny(tiny_lm_path: Path, *overrides: str):
    return load_config(None, [f"llm.model={tiny_lm_path}", *TINY, *overrides])


def write_train(path: Path, lines: list[str] | None = None, copies: int = 2) -> Path:
    rows = [json.dumps({"prompt": q, "completion": a}) for q, a in FACTS * copies]
    path.write_text("\n".join(lines if lines is not None else rows) + "\n")
    return path


@pytest.fixture
def serve(embedder) -> Iterator:
    """serve(config) -> (client, runner): the app as `ragtune serve` assembles it, run by uvicorn in a thread."""
    with ExitStack() as servers:

        def start(config):
            engine = Engine(config, embedder=embedder, lm=load_language_model(config.llm, progress=False))
            app = assemble(engine, KEY)
            url = servers.enter_context(running(app))
            return openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=60), app.state.runner

        yield start


def wait_done(client: openai.OpenAI, job_id: str, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status not in ("validating_files", "queued", "running"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} is still {job.status} after {timeout} s")


def wait_for(check, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_upload_train_and_chat_with_the_new_model(serve, tiny_lm_path: Path, tmp_path: Path) -> None:
    config = tiny(tiny_lm_path, "finetune.max_steps=2")
    client, _ = serve(config)
    with open(write_train(tmp_path / "train.jsonl"), "rb") as handle:
        uploaded = client.files.create(file=handle, purpose="fine-tune")
    assert uploaded.id.startswith("file-") and uploaded.filename == "train.jsonl" and uploaded.status == "processed"
    assert uploaded.bytes == (tmp_path / "train.jsonl").stat().st_size
    assert client.files.retrieve(uploaded.id).id == uploaded.id
    assert [f.id for f in client.files.list()] == [uploaded.id]

    hyper = {"n_epochs": 2, "batch_size": 2, "learning_rate_multiplier": 2}
    job = client.fine_tuning.jobs.create(
        training_file=uploaded.id, model="base", hyperparameters=hyper, suffix="library"
    )
    assert job.id.startswith("ftjob-") and job.status in ("queued", "running") and job.suffix == "library"
    assert job.hyperparameters.batch_size == 2 and job.hyperparameters.n_epochs == 2
    assert [j.id for j in client.fine_tuning.jobs.list()] == [job.id]
    resolved = load_config(data_home() / "serve" / "jobs" / job.id / "config.yaml")
    assert resolved.finetune.lr == pytest.approx(2 * config.finetune.lr) and resolved.finetune.epochs == 2

    done = wait_done(client, job.id)
    assert done.status == "succeeded", done.error
    name = f"library-{job.id[6:14]}"
    assert done.fine_tuned_model == f"finetune:{name}" and done.finished_at and done.error is None
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id)]
    assert any(m.startswith("Step 2/2: training loss=") for m in messages), messages
    assert len(list(client.fine_tuning.jobs.list_events(job.id, limit=2))) == len(messages)  # pages follow
    assert done.trained_tokens > 0
    assert done.model_extra["progress"] == {"step": 2, "total_steps": 2}

    ids = [m.id for m in client.models.list()]
    assert f"finetune:{name}" in ids and f"hybrid:{name}" in ids
    reply = client.chat.completions.create(
        model=f"finetune:{name}", messages=[{"role": "user", "content": "When does the library open?"}], max_tokens=5
    )
    # The adapted model answers alone (closed book: no sources), within the requested token budget.
    assert reply.model == f"finetune:{name}" and reply.model_extra["sources"] == []
    assert 1 <= reply.usage.completion_tokens <= 5
    # A restarted server lists the finished job exactly as it was.
    again = JobRunner(config).get(job.id)
    assert again["status"] == "succeeded" and again["fine_tuned_model"] == done.fine_tuned_model


def test_bad_requests_get_openai_errors(serve, tiny_lm_path: Path, tmp_path: Path) -> None:
    # max_seq_len=4: every prompt fills it, so training itself fails (in the subprocess) with a data error.
    config = tiny(tiny_lm_path, "finetune.max_steps=2", "serve.max_upload_bytes=2000", "finetune.max_seq_len=4")
    client, _ = serve(config)
    bad = write_train(tmp_path / "train.jsonl", ['{"prompt": "q", "completion": "a"}', '{"prompt": "q",'])
    with pytest.raises(openai.BadRequestError, match=r"train\.jsonl:2: not valid JSON"):
        client.files.create(file=bad.open("rb"), purpose="fine-tune")
    good = write_train(tmp_path / "good.jsonl")
    with pytest.raises(openai.BadRequestError, match="purpose 'assistants' is not supported"):
        client.files.create(file=good.open("rb"), purpose="assistants")
    big = write_train(tmp_path / "big.jsonl", [json.dumps({"prompt": "q", "completion": "a" * 100})] * 30)
    with pytest.raises(openai.APIStatusError, match="max_upload_bytes=2000") as info:
        client.files.create(file=big.open("rb"), purpose="fine-tune")
    assert info.value.status_code == 413
    huge = write_train(tmp_path / "huge.jsonl", [json.dumps({"prompt": "q", "completion": "a" * 1000})] * 200)
    with pytest.raises(openai.APIStatusError, match="max_upload_bytes") as info:
        client.files.create(file=huge.open("rb"), purpose="fine-tune")
    assert info.value.status_code == 413
    assert list(client.files.list()) == []  # nothing refused was kept

    uploaded = client.files.create(file=good.open("rb"), purpose="fine-tune")
    with pytest.raises(openai.NotFoundError, match="cannot be fine-tuned") as info:
        client.fine_tuning.jobs.create(training_file=uploaded.id, model="gpt-4o-mini")
    assert info.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError, match="no file"):
        client.fine_tuning.jobs.create(training_file="file-" + "0" * 24, model="base")
    with pytest.raises(openai.BadRequestError, match="n_epochs"):
        client.fine_tuning.jobs.create(training_file=uploaded.id, model="base", hyperparameters={"n_epochs": 0})
    for call in (client.fine_tuning.jobs.retrieve, client.fine_tuning.jobs.cancel, client.fine_tuning.jobs.list_events):
        with pytest.raises(openai.NotFoundError, match="no fine-tuning job"):
            call("ftjob-nope")
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve("file-nope")
    with pytest.raises(openai.AuthenticationError):
        client.with_options(api_key="wrong" * 8).files.list()
    assert list(client.fine_tuning.jobs.list()) == []

    failed = wait_done(client, client.fine_tuning.jobs.create(training_file=uploaded.id, model="base").id)
    assert failed.status == "failed" and failed.error.code == "training_failed" and failed.fine_tuned_model is None
    assert "finetune.max_seq_len=4" in failed.error.message and "good.jsonl:1" in failed.error.message
    assert client.fine_tuning.jobs.list_events(failed.id).data[0].level == "error"


def test_cancel_queued_and_running_jobs_and_stop(serve, tiny_lm_path: Path, tmp_path: Path) -> None:
    client, runner = serve(tiny(tiny_lm_path))  # no max_steps: 100 epochs of 100 steps run until stopped
    data = write_train(tmp_path / "t.jsonl", copies=50)
    uploaded = client.files.create(file=data.open("rb"), purpose="fine-tune")
    long = {"n_epochs": 100}
    running = client.fine_tuning.jobs.create(training_file=uploaded.id, model="base", hyperparameters=long)
    queued = client.fine_tuning.jobs.create(training_file=uploaded.id, model="base", hyperparameters=long)
    wait_for(lambda: runner._process is not None)
    process = runner._process
    assert client.fine_tuning.jobs.retrieve(queued.id).status == "queued"
    assert client.fine_tuning.jobs.cancel(queued.id).status == "cancelled"
    assert client.fine_tuning.jobs.cancel(running.id).status == "cancelled"
    assert process.wait(timeout=30) != 0  # the trainer was terminated
    assert client.fine_tuning.jobs.cancel(running.id).status == "cancelled"  # idempotent
    assert {j.status for j in client.fine_tuning.jobs.list()} == {"cancelled"}

    # Stopping the server ends the job in training and leaves it resumable.
    third = client.fine_tuning.jobs.create(training_file=uploaded.id, model="base", hyperparameters=long)
    wait_for(lambda: runner._process is not None)
    process = runner._process
    runner.stop()
    assert process.poll() is not None
    stopped = client.fine_tuning.jobs.retrieve(third.id)
    assert stopped.status == "failed" and stopped.error.code == "server_restarted"


def test_restart_fails_running_jobs_and_resume_finishes_them(serve, tiny_lm_path: Path, tmp_path: Path) -> None:
    config = tiny(tiny_lm_path, "finetune.max_steps=2")
    before = JobRunner(config)  # never started: its jobs stay queued on disk
    data = write_train(tmp_path / "train.jsonl")
    info = before.files.store(data.open("rb"), "train.jsonl")
    request = JobRequest(training_file=info["id"], model="base")
    crashed, validating, queued = (before.create(request, ("base",))["id"] for _ in range(3))
    # An orphaned trainer of the crashed job, still running after its server died.
    adapter = before._jobs[crashed]["adapter"]
    orphan = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "ragtune.cli", adapter])
    for job_id, status, pid in ((crashed, "running", orphan.pid), (validating, "validating_files", None)):
        path = data_home() / "serve" / "jobs" / job_id / "job.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "status": status, "pid": pid}))

    client, _ = serve(config)
    assert orphan.wait(timeout=15) != 0
    for job_id in (crashed, validating):
        job = client.fine_tuning.jobs.retrieve(job_id)
        assert job.status == "failed" and job.error.code == "server_restarted"
        assert f"/v1/fine_tuning/jobs/{job_id}/resume" in job.error.message
    assert wait_done(client, queued).status == "succeeded"  # queued jobs are picked up again

    resumed = client.post(f"/fine_tuning/jobs/{crashed}/resume", cast_to=openai.types.fine_tuning.FineTuningJob)
    assert resumed.status == "queued" and resumed.error is None
    done = wait_done(client, crashed)
    assert done.status == "succeeded", done.error
    messages = [e.message for e in client.fine_tuning.jobs.list_events(crashed, limit=100)]
    assert "Fine-tuning job started (resuming)" in messages
    with pytest.raises(openai.BadRequestError, match="only failed or cancelled"):
        client.post(f"/fine_tuning/jobs/{crashed}/resume", cast_to=openai.types.fine_tuning.FineTuningJob)


def test_the_queue_is_bounded_by_serve_max_jobs(serve, tiny_lm_path: Path, tmp_path: Path) -> None:
    client, _ = serve(tiny(tiny_lm_path, "serve.max_jobs=2"))
    uploaded = client.files.create(file=write_train(tmp_path / "t.jsonl").open("rb"), purpose="fine-tune")
    long = {"n_epochs": 100}

    def create():
        return client.fine_tuning.jobs.create(training_file=uploaded.id, model="base", hyperparameters=long)

    first, second = create(), create()  # one trains, one waits
    with pytest.raises(openai.RateLimitError) as refused:
        create()
    assert refused.value.status_code == 429
    assert refused.value.body == {
        "message": "2 fine-tuning jobs are already queued or running (serve.max_jobs=2); "
        "retry when one finishes, or cancel one",
        "type": "rate_limit_error",
        "param": None,
        "code": "too_many_jobs",
    }
    client.fine_tuning.jobs.cancel(second.id)  # a finished job frees its place
    third = create()
    with pytest.raises(openai.RateLimitError, match="serve.max_jobs=2"):  # resuming queues a job too
        client.post(f"/fine_tuning/jobs/{second.id}/resume", cast_to=openai.types.fine_tuning.FineTuningJob)
    for job in (first, third):
        client.fine_tuning.jobs.cancel(job.id)
    assert {j.status for j in client.fine_tuning.jobs.list()} == {"cancelled"}


def test_progress_is_written_at_most_every_interval_and_every_state_at_once(
    serve, tiny_lm_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    written: list[str] = []  # the status in each write of a job.json, in order

    def counting(path: Path, data: dict, *args, **kwargs) -> None:
        if path.name == "job.json":
            written.append(data["status"])
        write(path, data, *args, **kwargs)

    write = jobs.atomic_write_json
    monkeypatch.setattr(jobs, "atomic_write_json", counting)
    config = tiny(tiny_lm_path, "finetune.max_steps=6", "serve.job_write_interval_s=600")
    client, runner = serve(config)
    uploaded = client.files.create(file=write_train(tmp_path / "t.jsonl").open("rb"), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(training_file=uploaded.id, model="base")
    assert wait_done(client, job.id).status == "succeeded"
    steps = [e for e in client.fine_tuning.jobs.list_events(job.id, limit=100) if e.type == "metrics"]
    assert len(steps) == 6
    # Created, queued, running, its trainer's pid, succeeded: no step of the six wrote the file by itself.
    assert written == ["validating_files", "queued", "running", "running", "succeeded"]
    on_disk = json.loads((data_home() / "serve" / "jobs" / job.id / "job.json").read_text())
    assert on_disk["status"] == "succeeded" and on_disk["events"] == runner._jobs[job.id]["events"]

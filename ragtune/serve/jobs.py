"""Fine-tuning jobs over HTTP: OpenAI-shaped `/v1/fine_tuning/jobs`, trained one at a time in a subprocess.

Each job is a folder `serve/jobs/ID/` with `job.json` (rewritten atomically: at once on a change of state, at
most every serve.job_write_interval_s for training progress), the resolved `config.yaml` and the trainer's
logs. A worker thread runs `python -m ragtune.cli train` for the oldest queued job and turns its
`step i/N loss x` lines into events. A job caught running by a restart becomes failed (`server_restarted`);
`POST .../resume` queues it again and training continues from its last checkpoint. At most serve.max_jobs
jobs are queued or running at once.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

from fastapi import APIRouter

from models.config import Config, to_yaml
from models.errors import IndexCorruptError
from models.paths import data_home
from models.storage import atomic_write_json, atomic_write_text, read_json
from ragtune.serve.engine import Engine, UnknownModelError
from ragtune.serve.errors import ApiError
from ragtune.serve.files import After, FileStore, Limit, add_file_routes, page
from ragtune.serve.schemas import JobRequest, quoted

# The installed CLI, not a script path: works from a wheel as from a checkout.
TRAINER = [sys.executable, "-m", "ragtune.cli", "train"]
STEP = re.compile(r"step (\d+)/(\d+) loss (\S+)")
NULLS = ("finished_at", "fine_tuned_model", "validation_file", "error", "trained_tokens", "estimated_finish")
NULLS += ("integrations", "metadata")
INTERNAL = ("events", "adapter", "resume", "pid", "queued_at")  # kept in job.json, not shown to clients
ACTIVE = ("validating_files", "queued", "running")  # a job in these states still reads its training file


def public(job: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in job.items() if k not in INTERNAL}


def event(message: str, level: str = "info", kind: str = "message", data: Any = None) -> dict[str, Any]:
    return {
        "id": f"ftevent-{uuid.uuid4().hex[:24]}",
        "object": "fine_tuning.job.event",
        "created_at": int(time.time()),
        "level": level,
        "message": message,
        "type": kind,
        "data": data,
    }


def resolved_hyperparameters(config: Config, body: JobRequest) -> tuple[Config, dict[str, Any]]:
    """The server's config with the request's hyperparameters applied ("auto": the config's value)."""
    if body.method is not None and body.method.type != "supervised":
        raise ApiError(400, f"method.type {body.method.type!r} is not supported; use supervised", code="invalid_method")
    hp = body.method.supervised.hyperparameters if body.method and body.method.supervised else body.hyperparameters
    ft = config.finetune
    epochs = ft.epochs if hp.n_epochs == "auto" else float(hp.n_epochs)
    multiplier = 1.0 if hp.learning_rate_multiplier == "auto" else float(hp.learning_rate_multiplier)
    batch_size = ft.batch_size if hp.batch_size == "auto" else hp.batch_size
    seed = ft.seed if body.seed is None else body.seed
    ft = replace(ft, epochs=epochs, batch_size=batch_size, lr=ft.lr * multiplier, seed=seed)
    shown_epochs = int(epochs) if epochs.is_integer() else epochs
    shown = {"n_epochs": shown_epochs, "batch_size": batch_size, "learning_rate_multiplier": multiplier}
    return replace(config, finetune=ft), shown


class JobRunner:
    """Owns the jobs on disk and the one worker thread that trains them; every method is thread-safe."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.home = data_home()
        self.root = self.home / "serve" / "jobs"
        self.files = FileStore(self.home / "serve" / "files", config.serve)
        self._lock = threading.Condition()  # guards everything below; notified when work arrives or on stop
        self._jobs: dict[str, dict[str, Any]] = {}
        self._process: subprocess.Popen[bytes] | None = None
        self._current: str | None = None  # the id of the job whose trainer is _process
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._written: dict[str, float] = {}  # job id -> when its job.json was last written (monotonic)
        self._unwritten: set[str] = set()  # jobs whose latest progress is not on disk yet
        for path in sorted(self.root.glob("ftjob-*/job.json")):
            try:
                job = read_json(path, "job record")
            except IndexCorruptError as exc:  # atomic writes make this unlikely; say so rather than crash
                print(f"ragtune: skipping a damaged fine-tuning job: {exc}", file=sys.stderr)
                continue
            self._jobs[job["id"]] = job
            if job["status"] in ("running", "validating_files"):
                self._recover(job)

    # -- lifecycle (the server's startup and shutdown hooks) ---------------------------------------
    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stopping = False
        self._thread = threading.Thread(target=self._work, name="ragtune-jobs", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the worker; a job in training is ended and left resumable (failed, server_restarted)."""
        with self._lock:
            self._stopping, process = True, self._process
            self._lock.notify_all()
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        if self._thread is not None:
            self._thread.join(timeout=30)
        with self._lock:
            for job_id in list(self._unwritten):
                self._write(self._jobs[job_id])

    # -- requests ----------------------------------------------------------------------------------
    def create(self, body: JobRequest, base_ids: tuple[str, ...]) -> dict[str, Any]:
        if body.model not in base_ids:
            raise UnknownModelError(
                f"model {body.model!r} cannot be fine-tuned here; use `base` (this server's {base_ids[-1]})"
            )
        if body.validation_file is not None:
            raise ApiError(400, "validation_file is not supported; finetune.eval_fraction of training_file is held out")
        config, shown = resolved_hyperparameters(self.config, body)
        with self._lock:  # with the file looked up under the lock, a delete cannot slip in before the job is queued
            self._check_room()
            info = self.files.get(body.training_file)
            job_id = self._new_id(body.suffix or "ft")
            atomic_write_text(self.root / job_id / "config.yaml", to_yaml(config))
            job = {
                "id": job_id,
                "object": "fine_tuning.job",
                **dict.fromkeys(NULLS),
                "model": body.model,
                "created_at": int(time.time()),
                "organization_id": "ragtune",
                "status": "validating_files",
                "training_file": info["id"],
                "hyperparameters": shown,
                "method": {"type": "supervised", "supervised": {"hyperparameters": shown}},
                "result_files": [],
                "seed": config.finetune.seed,
                "suffix": body.suffix,
                "progress": {"step": 0, "total_steps": None},  # extra field: in the client's model_extra
                "adapter": f"{body.suffix or 'ft'}-{job_id[6:14]}",
                "events": [],
            }
            self._update(job, event(f"Validating training file: {info['id']}"))
            # The file was validated when it was uploaded: nothing slow is left to check in the request.
            self._update(
                job, event("Files validated, moving job to queued state"), status="queued", queued_at=time.time()
            )
            self._lock.notify_all()
            return public(job)

    def get(self, job_id: str) -> dict[str, Any]:
        with self._lock:
            return public(self._find(job_id))

    def newest_first(self) -> list[dict[str, Any]]:
        with self._lock:
            return [public(j) for j in sorted(self._jobs.values(), key=lambda j: j["created_at"], reverse=True)]

    def events(self, job_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return list(reversed(self._find(job_id)["events"]))  # newest first, as OpenAI lists them

    def cancel(self, job_id: str) -> dict[str, Any]:
        with self._lock:
            job = self._find(job_id)
            if job["status"] in ("succeeded", "failed"):
                raise ApiError(400, f"job {job_id} already {job['status']}; only active jobs can be cancelled")
            if job["status"] != "cancelled":
                self._update(job, event("Fine-tuning job cancelled"), status="cancelled", finished_at=int(time.time()))
                if self._process is not None and self._current == job_id:
                    self._process.terminate()  # the worker reaps it and moves on
            return public(job)

    def resume(self, job_id: str) -> dict[str, Any]:
        with self._lock:
            job = self._find(job_id)
            if job["status"] not in ("failed", "cancelled"):
                raise ApiError(400, f"job {job_id} is {job['status']}; only failed or cancelled jobs can be resumed")
            self.files.get(job["training_file"])  # deleted since: 404 now rather than a failed job later
            if self._current == job_id:
                raise ApiError(409, f"job {job_id}'s trainer is still stopping; retry in a few seconds", code="busy")
            self._check_room()
            message = event("Job resumed: queued to continue from its last checkpoint")
            self._update(
                job, message, status="queued", error=None, finished_at=None, resume=True, queued_at=time.time()
            )
            self._lock.notify_all()
            return public(job)

    def delete_file(self, file_id: str) -> dict[str, Any]:
        """Delete an uploaded file unless a job that has yet to finish trains on it (409)."""
        with self._lock:
            users = [j["id"] for j in self._jobs.values() if j["training_file"] == file_id and j["status"] in ACTIVE]
            if users:
                raise ApiError(
                    409,
                    f"file {file_id} is the training file of {users[0]} ({self._jobs[users[0]]['status']}); "
                    "cancel that job or wait for it to finish, then delete the file",
                    code="file_in_use",
                )
            return self.files.delete(file_id)

    # -- the worker --------------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._stopping and (job := self._next()) is None:
                    self._lock.wait()
                if self._stopping:
                    return
                started = "Fine-tuning job started" + (" (resuming)" if job.get("resume") else "")
                self._update(job, event(started), status="running")
            try:
                self._train(job)
            except Exception as exc:  # a full disk, say: fail this job loudly, keep serving the others
                with self._lock:
                    if self._process is not None:
                        self._process.kill()
                    self._process = self._current = None
                    self._finish(job, -1, f"internal error: {type(exc).__name__}: {exc}")

    def _next(self) -> dict[str, Any] | None:
        queued = [j for j in self._jobs.values() if j["status"] == "queued"]
        return min(queued, key=lambda j: j.get("queued_at", j["created_at"]), default=None)

    def _train(self, job: dict[str, Any]) -> None:
        folder, last, where = self.root / job["id"], "", ("", "")
        env = {**os.environ, "RAGTUNE_HOME": str(self.home)}  # the adapter lands where /v1/models looks
        try:
            data = self.files.data_path(job["training_file"])
            where = (str(data), self.files.get(job["training_file"])["filename"])  # say the client's file name
            command = [*TRAINER, "--config", str(folder / "config.yaml"), "--data", str(data)]
            command += ["--name", job["adapter"]] + (["--resume"] if job.get("resume") else [])
            with open(folder / "stdout.log", "ab") as out, open(folder / "train.log", "ab") as log:
                with self._lock:
                    if job["status"] != "running":  # cancelled before it started
                        return
                    if self._stopping:
                        return self._fail(job, "the server stopped before this job began")
                    process = self._process = subprocess.Popen(command, stdout=out, stderr=subprocess.PIPE, env=env)
                    self._current = job["id"]
                    self._update(job, pid=process.pid)
                for raw in process.stderr or ():
                    log.write(raw)
                    for line in raw.decode("utf-8", "replace").replace("\r", "\n").split("\n"):
                        last = line.strip() or last
                        if match := STEP.fullmatch(line.strip()):
                            self._step(job, *match.groups())
                code = process.wait()
        except (OSError, ApiError) as exc:  # the training file went missing, a log could not be written...
            started = self._process is not None
            if started and self._process.poll() is None:  # never leave a trainer running unwatched
                self._process.kill()
                self._process.wait()
            code = -1
            last = f"{'training stopped' if started else 'could not start training'}: {getattr(exc, 'message', exc)}"
        with self._lock:
            self._process = self._current = None
            self._finish(job, code, last.replace(*where) if where[0] else last)

    def _step(self, job: dict[str, Any], step: str, total: str, loss: str) -> None:
        data = {"step": int(step), "total_steps": int(total), "train_loss": float(loss)}
        message = event(f"Step {step}/{total}: training loss={loss}", kind="metrics", data=data)
        with self._lock:
            self._update(job, message, progress={"step": data["step"], "total_steps": data["total_steps"]})

    def _finish(self, job: dict[str, Any], code: int, last: str) -> None:
        if job["status"] != "running":  # cancelled meanwhile (and maybe queued again): this run's result is stale
            return
        if code == 0:
            model = f"finetune:{job['adapter']}"
            done = [event(f"New fine-tuned model created: {model}"), event("The job has successfully completed")]
            changes = {"fine_tuned_model": model, "trained_tokens": self._tokens(job)}
            self._update(job, *done, status="succeeded", finished_at=int(time.time()), **changes)
        elif self._stopping:
            self._fail(job, "the server stopped while this job was training")
        else:
            message = last.removeprefix("ragtune: error: ") or f"training exited with code {code}"
            self._fail(job, message, code="training_failed")

    def _tokens(self, job: dict[str, Any]) -> int | None:
        try:
            metrics = read_json(self.home / "adapters" / job["adapter"] / "ragtune-adapter.json", "manifest")["metrics"]
            return round(metrics["tokens_per_s"] * metrics["seconds"])
        except (OSError, KeyError, TypeError, IndexCorruptError):
            return None

    # -- state -------------------------------------------------------------------------------------
    def _recover(self, job: dict[str, Any]) -> None:
        """A job the last server left running: end its orphaned trainer, mark it failed and resumable."""
        if (self.home / "adapters" / job["adapter"] / "ragtune-adapter.json").is_file():  # it finished after all
            return self._finish(job, 0, "")
        pid = job.get("pid")
        if pid and job["adapter"].encode() in _cmdline(pid) and b"ragtune.cli" in _cmdline(pid):
            os.kill(pid, signal.SIGTERM)
            for _ in range(100):  # not our child, so wait for /proc to drop it rather than waitpid
                if not _cmdline(pid):
                    break
                time.sleep(0.1)
        self._fail(job, f"the server restarted while this job was {job['status']}")

    def _fail(self, job: dict[str, Any], why: str, code: str = "server_restarted") -> None:
        if code == "server_restarted":
            why += f"; POST /v1/fine_tuning/jobs/{job['id']}/resume continues it from the last checkpoint"
        error = {"code": code, "message": why, "param": None}
        failed = event(f"Fine-tuning job failed: {why}", level="error")
        self._update(job, failed, status="failed", finished_at=int(time.time()), error=error)

    def _check_room(self) -> None:
        """429 when serve.max_jobs jobs are already queued or running (called under the lock)."""
        active, limit = sum(j["status"] in ACTIVE for j in self._jobs.values()), self.config.serve.max_jobs
        if active >= limit:
            raise ApiError(
                429,
                f"{active} fine-tuning jobs are already queued or running (serve.max_jobs={limit}); "
                "retry when one finishes, or cancel one",
                kind="rate_limit_error",
                code="too_many_jobs",
            )

    def _find(self, job_id: str) -> dict[str, Any]:
        if job_id not in self._jobs:
            raise ApiError(404, f"no fine-tuning job with id {quoted(job_id)}; GET /v1/fine_tuning/jobs lists them")
        return self._jobs[job_id]

    def _new_id(self, suffix: str) -> str:
        while True:  # the adapter name holds 8 hex digits of the id: keep those unique too
            job_id = f"ftjob-{uuid.uuid4().hex[:24]}"
            short = job_id[6:14]
            taken = any(j["id"][6:14] == short for j in self._jobs.values())
            if not taken and not (self.home / "adapters" / f"{suffix}-{short}").exists():
                return job_id

    def _update(self, job: dict[str, Any], *events: dict[str, Any], **changes: Any) -> None:
        """Apply changes and new events; rewrite job.json at once for a new job, state or trainer (its pid finds
        an orphan after a crash), else at most every serve.job_write_interval_s (the last one waits for the next
        change, or stop). Clients read the jobs in memory, always current."""
        job.update(changes)
        job["events"].extend(events)
        self._jobs[job["id"]] = job
        last = self._written.get(job["id"])
        due = last is None or time.monotonic() - last >= self.config.serve.job_write_interval_s
        if due or {"status", "pid"} & changes.keys():
            self._write(job)
        else:
            self._unwritten.add(job["id"])

    def _write(self, job: dict[str, Any]) -> None:
        atomic_write_json(self.root / job["id"] / "job.json", job)  # readers see the old or the new, never half
        self._written[job["id"]] = time.monotonic()
        self._unwritten.discard(job["id"])


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def jobs_router(runner: JobRunner, engine: Engine) -> APIRouter:
    """The files and fine-tuning routes; the app adds the API-key check."""
    router = APIRouter()
    add_file_routes(router, runner.files, runner.delete_file)
    base_ids = ("base", engine.config.llm.model)

    @router.post("/v1/fine_tuning/jobs")
    def create_job(body: JobRequest) -> dict[str, Any]:
        return runner.create(body, base_ids)

    @router.get("/v1/fine_tuning/jobs")
    def list_jobs(after: After = None, limit: Limit = 20) -> dict[str, Any]:
        return page(runner.newest_first(), after, limit)

    @router.get("/v1/fine_tuning/jobs/{job_id}")
    def retrieve_job(job_id: str) -> dict[str, Any]:
        return runner.get(job_id)

    @router.get("/v1/fine_tuning/jobs/{job_id}/events")
    def list_events(job_id: str, after: After = None, limit: Limit = 20) -> dict[str, Any]:
        return page(runner.events(job_id), after, limit)

    @router.post("/v1/fine_tuning/jobs/{job_id}/cancel")
    def cancel_job(job_id: str) -> dict[str, Any]:
        return runner.cancel(job_id)

    @router.post("/v1/fine_tuning/jobs/{job_id}/resume")
    def resume_job(job_id: str) -> dict[str, Any]:
        return runner.resume(job_id)

    return router

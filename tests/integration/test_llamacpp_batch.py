"""Concurrent requests decoded together on the llama.cpp engine (serve.parallel): the same answers as one at a
time, each request with its own sampling, stop strings, length and adapter; a closed stream frees its sequence."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from models.config import LLMConfig, load_config
from models.generate import AdapterRef, LanguageModel, SamplingParams, load_language_model

pytest.importorskip("llama_cpp", reason="the llamacpp extra is not installed: pip install 'ragtune[llamacpp]'")

from models.engines.llamacpp_batch import BatchDecoder, BatchedGenerator  # noqa: E402

SMOL = "smollm2-135m-instruct"  # the packaged GGUF: loads in about a second
QUESTIONS = ["When does the library open?", "Name three colours.", "What is 12 times 12?", "Write a haiku about rain."]
GREEDY = SamplingParams(max_new_tokens=24)


def ask(question: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": question}]


@pytest.fixture(scope="module")
def lm() -> LanguageModel:
    return load_language_model(LLMConfig(model=SMOL, backend="llamacpp", context_window=512), progress=False)


@pytest.fixture(scope="module")
def decoder(lm: LanguageModel) -> Iterator[BatchDecoder]:
    decoder = BatchDecoder(lm, 4)
    yield decoder
    decoder.close()


@pytest.fixture(scope="module")
def alone(lm: LanguageModel) -> list[str]:
    """Each question's greedy answer on the one-request-at-a-time path."""
    return ["".join(lm.generator().stream(ask(q), GREEDY)) for q in QUESTIONS]


def together(generators: list, messages: list[list[dict[str, str]]], params: list[SamplingParams]) -> list[str]:
    """Every request streamed from its own thread at the same time; their texts in order."""
    texts: list[str | BaseException] = [""] * len(messages)

    def run(i: int) -> None:
        try:
            texts[i] = "".join(generators[i].stream(messages[i], params[i]))
        except BaseException as exc:  # re-raised below, on the test's thread
            texts[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(messages))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for text in texts:
        if isinstance(text, BaseException):
            raise text
    return texts  # type: ignore[return-value]


def test_concurrent_greedy_answers_equal_each_one_decoded_alone(lm, decoder, alone) -> None:
    generators = [BatchedGenerator(lm.generator(), decoder)] * 4
    assert together(generators, [ask(q) for q in QUESTIONS], [GREEDY] * 4) == alone
    assert len(set(alone)) == 4 and all(alone)


def test_stop_strings_and_max_tokens_apply_per_request(lm, decoder, alone) -> None:
    stop = SamplingParams(max_new_tokens=24, stop=(alone[0].strip()[5:8],))
    short = SamplingParams(max_new_tokens=5)
    params = [stop, short, GREEDY, GREEDY]
    generator = BatchedGenerator(lm.generator(), decoder)
    got = together([generator] * 4, [ask(q) for q in QUESTIONS], params)
    assert got[0] == "".join(lm.generator().stream(ask(QUESTIONS[0]), stop)) and len(got[0]) < len(alone[0])
    assert got[1] == "".join(lm.generator().stream(ask(QUESTIONS[1]), short))
    assert got[2:] == alone[2:]
    stream = generator.stream(ask(QUESTIONS[1]), short)
    "".join(stream)
    assert stream.usage.completion_tokens == 5 and stream.usage.finish_reason == "length"


def test_each_sequence_samples_with_its_own_temperature_and_seed(lm, decoder, alone) -> None:
    generator = BatchedGenerator(lm.generator(), decoder)
    hot = [SamplingParams(max_new_tokens=24, temperature=1.0, seed=s) for s in (7, 8)]
    nucleus = SamplingParams(max_new_tokens=24, temperature=0.7, top_p=0.9, seed=7)
    params = [hot[0], hot[1], nucleus, GREEDY]
    question = ask(QUESTIONS[0])
    got = together([generator] * 4, [question] * 3 + [ask(QUESTIONS[3])], params)
    assert got[3] == alone[3]  # greedy beside sampled sequences
    for text, p in zip(got[:3], params[:3]):
        assert text == "".join(generator.stream(question, p))  # a seed repeats its answer, alone or in a batch
    assert len({got[0], got[1], alone[0]}) == 3


def test_a_closed_stream_frees_its_sequence_and_the_others_go_on(lm, decoder, alone) -> None:
    import llama_cpp

    generator = BatchedGenerator(lm.generator(), decoder)
    leaving = iter(generator.stream(ask(QUESTIONS[1]), SamplingParams(max_new_tokens=400)))
    next(leaving)
    staying = generator.stream(ask(QUESTIONS[0]), GREEDY)
    pieces = iter(staying)
    first = next(pieces)
    leaving.close()  # the client goes away mid-answer
    assert first + "".join(pieces) == alone[0]
    deadline = time.monotonic() + 10
    while any(llama_cpp.llama_memory_seq_pos_max(decoder.memory, s) >= 0 for s in range(4)):
        assert time.monotonic() < deadline, "a finished or closed sequence kept its KV cells"
        time.sleep(0.05)
    assert "".join(generator.stream(ask(QUESTIONS[2]), GREEDY)) == alone[2]  # a later request still works


def test_requests_beyond_parallel_wait_their_turn(lm, alone) -> None:
    decoder = BatchDecoder(lm, 2)
    seen: list[int] = []
    step = decoder._step
    decoder._step = lambda active: (seen.append(len(active)), step(active))[1]  # sequences in each llama_decode
    try:
        generators = [BatchedGenerator(lm.generator(), decoder)] * 4
        assert together(generators, [ask(q) for q in QUESTIONS], [GREEDY] * 4) == alone
    finally:
        decoder.close()
    assert max(seen) == 2


def test_an_adapter_request_and_a_base_request_at_once(lm, decoder, alone, tmp_path: Path) -> None:
    from finetune.gguf_export import export_gguf_lora
    from models.gguf import gguf_file
    from models.presets import PRESETS
    from tests.gguf_lora_helpers import random_lora_folder

    folder = random_lora_folder(tmp_path / "adapter", SMOL, 1, std=0.3)  # strong enough to change the answer
    export_gguf_lora(folder, gguf_file(SMOL), PRESETS[SMOL].sha256)
    lm.load_adapter(AdapterRef("batch-a1", folder))
    adapted = "".join(lm.generator("batch-a1").stream(ask(QUESTIONS[0]), GREEDY))
    assert adapted != alone[0]
    generators = [BatchedGenerator(lm.generator(name), decoder) for name in ("batch-a1", None, "batch-a1", None)]
    messages = [ask(QUESTIONS[0]), ask(QUESTIONS[1]), ask(QUESTIONS[0]), ask(QUESTIONS[3])]
    assert together(generators, messages, [GREEDY] * 4) == [adapted, alone[1], adapted, alone[3]]


def test_serve_with_parallel_two_streams_two_chats_at_once(lm, alone, docs: Path, embedder) -> None:
    from models.answer import text_of
    from rag.ingest import ingest
    from ragtune.serve.background import running
    from ragtune.serve.engine import Engine
    from ragtune.serve.routes import create_app

    key = "test-key-" + "x" * 24
    overrides = [f"llm.model={SMOL}", "llm.backend=llamacpp", "llm.context_window=512", "serve.parallel=2"]
    config = load_config(None, overrides)
    ingest([docs], config, embedder, progress=False)
    engine = Engine(config, embedder=embedder, lm=lm)
    assert engine._batch is not None and engine._batch.parallel == 2
    one_at_a_time = Engine(load_config(None, overrides[:-1]), embedder=embedder, lm=lm)
    expected = []
    for question in QUESTIONS[:2]:
        reply = one_at_a_time.reply("base", ask(question), SamplingParams(max_new_tokens=16))
        expected.append("".join(text_of(reply)))
    got: list[str] = ["", ""]
    with running(create_app(engine, key)) as url:

        def chat(i: int) -> None:
            body = {"model": "base", "messages": ask(QUESTIONS[i]), "max_tokens": 16, "stream": True}
            headers = {"Authorization": f"Bearer {key}"}
            with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, headers=headers, timeout=60) as r:
                assert r.status_code == 200
                for line in r.iter_lines():
                    if line.startswith("data: ") and line != "data: [DONE]":
                        chunk = json.loads(line[6:])
                        got[i] += "".join(c["delta"].get("content") or "" for c in chunk.get("choices", []))

        threads = [threading.Thread(target=chat, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    engine._batch.close()
    assert got == expected and all(got)


def test_serve_parallel_below_one_is_refused_by_name() -> None:
    from models.errors import ConfigError

    with pytest.raises(ConfigError, match="serve.parallel: should be positive, got 0"):
        load_config(None, ["serve.parallel=0"])
    assert load_config(None, []).serve.parallel == 1

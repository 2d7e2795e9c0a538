"""The generation interface over a tiny LM built in code."""

from pathlib import Path

import pytest

from models.config import LLMConfig
from models.errors import ModelError
from models.generate import HFGenerator, SamplingParams
from models.loading import load_lm

MESSAGES = [{"role": "user", "content": "When does the library open?"}]


@pytest.fixture(scope="module")
def generator(tiny_lm_path: Path) -> HFGenerator:
    lm = load_lm(LLMConfig(model=str(tiny_lm_path), dtype="float32"))
    return HFGenerator(lm.model, lm.tokenizer, "tiny", context_window=512)


def test_stream_yields_text_and_reports_usage(generator: HFGenerator) -> None:
    stream = generator.stream(MESSAGES, SamplingParams(max_new_tokens=6))
    text = "".join(stream)
    assert stream.usage.prompt_tokens > 0
    assert 1 <= stream.usage.completion_tokens <= 6
    assert stream.usage.first_token_s is not None and stream.usage.total_s >= stream.usage.first_token_s
    assert isinstance(text, str)


def test_greedy_is_deterministic_and_max_tokens_is_a_length_finish(generator: HFGenerator) -> None:
    runs = []
    for _ in range(2):
        stream = generator.stream(MESSAGES, SamplingParams(max_new_tokens=5))
        runs.append("".join(stream))
    assert runs[0] == runs[1]
    if stream.usage.completion_tokens == 5:
        assert stream.usage.finish_reason == "length"


def test_seeded_sampling_repeats(generator: HFGenerator) -> None:
    params = SamplingParams(max_new_tokens=6, temperature=1.0, seed=7)
    assert "".join(generator.stream(MESSAGES, params)) == "".join(generator.stream(MESSAGES, params))


def test_stop_string_cuts_the_text(generator: HFGenerator) -> None:
    full = "".join(generator.stream(MESSAGES, SamplingParams(max_new_tokens=12)))
    if len(full.strip()) < 2:
        pytest.skip(f"the random tiny model produced too little text to cut: {full!r}")
    stop = full.strip()[1]
    cut = "".join(generator.stream(MESSAGES, SamplingParams(max_new_tokens=12, stop=(stop,))))
    assert stop not in cut and full.startswith(cut)


def test_closing_the_stream_early_frees_the_model(generator: HFGenerator) -> None:
    stream = iter(generator.stream(MESSAGES, SamplingParams(max_new_tokens=50)))
    next(stream, None)
    stream.close()  # a client that goes away: the worker thread must end and release the lock
    assert generator._lock.acquire(timeout=10)
    generator._lock.release()


def test_prompt_over_the_context_window_is_refused(generator: HFGenerator) -> None:
    long = [{"role": "user", "content": "library " * 600}]
    with pytest.raises(ModelError, match="over llm.context_window=512"):
        generator.stream(long, SamplingParams())


def test_streamed_pieces_never_show_part_of_a_stop_string(generator: HFGenerator) -> None:
    full = "".join(generator.stream(MESSAGES, SamplingParams(max_new_tokens=12)))
    if len(full.strip()) < 4:
        pytest.skip(f"the random tiny model produced too little text: {full!r}")
    stop = full.strip()[2:4]  # two characters from inside the answer
    pieces = list(generator.stream(MESSAGES, SamplingParams(max_new_tokens=12, stop=(stop,))))
    text = "".join(pieces)
    assert stop not in text and full.startswith(text)
    shown = ""
    for piece in pieces:
        shown += piece
        assert stop not in shown

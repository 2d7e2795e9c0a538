"""The llama.cpp engine on the packaged GGUF models: the same prompt tokens as transformers, log-probabilities
that agree with transformers on the same weights, and llm.backend=auto's choice."""

from __future__ import annotations

import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from models.config import LLMConfig
from models.errors import ModelError
from models.generate import load_language_model, resolve_backend

pytest.importorskip("llama_cpp", reason="the llamacpp extra is not installed: pip install 'ragtune[llamacpp]'")

SMOL = "smollm2-135m-instruct"
MESSAGES = [
    {"role": "system", "content": "Answer from the context only."},
    {"role": "user", "content": "Context: the library opens at 9am.\n\nQuestion: When does the library open?"},
]


@pytest.fixture(scope="module")
def smol():
    return load_language_model(LLMConfig(model=SMOL, backend="llamacpp", context_window=512), progress=False)


def _hf_tokenizer(model: str):
    from transformers import AutoTokenizer

    from models.loading import lm_folder

    return AutoTokenizer.from_pretrained(lm_folder(model, progress=False))


@pytest.mark.parametrize("model", [SMOL, "qwen2.5-coder-0.5b-instruct"])
@pytest.mark.parametrize("messages", [MESSAGES, MESSAGES[1:]], ids=["system", "no-system"])
def test_chat_prompt_tokens_equal_transformers(model: str, messages: list[dict[str, str]]) -> None:
    """The GGUF's template rendered by the engine gives exactly apply_chat_template's token ids."""
    import llama_cpp

    from models.engines.llamacpp import LlamaCppLM
    from models.gguf import gguf_file

    path = gguf_file(model)
    lm = LlamaCppLM(llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False), model, path, 4096)
    expected = _hf_tokenizer(model).apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    expected = expected["input_ids"] if isinstance(expected, dict) or hasattr(expected, "keys") else expected
    assert lm.generator().encode_chat(messages) == list(expected)


def test_continuation_logprobs_agree_with_transformers_on_the_same_weights(smol) -> None:
    """transformers runs the dequantised copy of the same GGUF: log-probabilities agree to quantisation noise."""
    import torch
    from transformers import AutoModelForCausalLM

    from models.loading import lm_folder

    choices = ["yes", "no", "maybe", " The library opens at 9am."]
    ours = smol.generator().continuation_logprobs(MESSAGES, choices)
    tokenizer = _hf_tokenizer(SMOL)
    model = AutoModelForCausalLM.from_pretrained(lm_folder(SMOL, progress=False), dtype=torch.float32)
    prompt = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=True, return_dict=True)
    prompt_ids = list(prompt["input_ids"])
    reference = []
    for choice in choices:
        ids = tokenizer(choice, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([prompt_ids + ids])).logits[0].log_softmax(-1)
        reference.append(sum(float(logits[len(prompt_ids) - 1 + i, t]) for i, t in enumerate(ids)))
    for got, want in zip(ours, reference):
        assert math.isfinite(got) and got < 0
        assert abs(got - want) <= 0.05 * abs(want) + 0.2, (ours, reference)  # measured: within 0.25 nats
    assert ours.index(max(ours)) == reference.index(max(reference))  # the same choice wins


def test_scoring_between_generations_leaves_them_unchanged(smol) -> None:
    from models.generate import SamplingParams

    params = SamplingParams(max_new_tokens=16)
    before = "".join(smol.generator().stream(MESSAGES, params))
    first = smol.generator().continuation_logprobs(MESSAGES, ["yes", "no"])
    assert "".join(smol.generator().stream(MESSAGES, params)) == before
    assert smol.generator().continuation_logprobs(MESSAGES, ["yes", "no"]) == pytest.approx(first, abs=1e-4)


def test_a_truncated_gguf_is_refused_before_llama_cpp_loads_it(tmp_path: Path) -> None:
    from models.gguf import gguf_file

    cut = tmp_path / "cut.gguf"
    with open(gguf_file(SMOL), "rb") as source:
        cut.write_bytes(source.read(8 << 20))  # the header and the first tensors only
    with pytest.raises(ModelError, match="is truncated"):
        load_language_model(LLMConfig(model=str(cut), backend="llamacpp"), progress=False)
    text = tmp_path / "notes.gguf"
    text.write_text("not weights\n")
    with pytest.raises(ModelError, match=rf"{text}: not a GGUF file"):
        load_language_model(LLMConfig(model=str(text), backend="llamacpp"), progress=False)


def test_auto_runs_a_gguf_on_llamacpp_on_the_cpu(tiny_lm_path: Path) -> None:
    assert resolve_backend(LLMConfig(model=SMOL, device="cpu")) == "llamacpp"
    assert resolve_backend(LLMConfig(model=str(tiny_lm_path), device="cpu")) == "transformers"


def test_auto_without_llama_cpp_falls_back_and_says_so_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import importlib.util

    import models.generate as generate

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llama_cpp" else real(name, *a))
    monkeypatch.setattr(generate, "_fallback_said", set())
    config = LLMConfig(model=SMOL, device="cpu")
    with caplog.at_level(logging.WARNING, logger="ragtune.engine"):
        assert resolve_backend(config) == "transformers" and resolve_backend(config) == "transformers"
    said = [r.getMessage() for r in caplog.records if r.name == "ragtune.engine"]
    assert len(said) == 1 and "llama-cpp-python is not installed" in said[0] and "ragtune[llamacpp]" in said[0]


def test_the_fallback_note_reaches_the_terminal_once_as_the_cli_sets_up(tmp_path: Path) -> None:
    """The CLI configures no logging handler (only quiet_libraries): the note must still reach stderr, once."""
    script = (
        "import importlib.util as u; real = u.find_spec; "
        "u.find_spec = lambda name, *a: None if name == 'llama_cpp' else real(name, *a); "
        "from ragtune.compose import quiet_libraries; quiet_libraries(); "
        "from models.config import LLMConfig; from models.generate import resolve_backend; "
        f"c = LLMConfig(model={SMOL!r}, device='cpu'); print(resolve_backend(c), resolve_backend(c))"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["transformers", "transformers"]
    lines = [line for line in done.stderr.splitlines() if "llama-cpp-python is not installed" in line]
    assert len(lines) == 1 and lines[0].startswith("ragtune: llm.backend=auto runs"), done.stderr


def test_speculative_on_transformers_is_a_config_error(tiny_lm_path: Path) -> None:
    from models.errors import ConfigError

    config = LLMConfig(model=str(tiny_lm_path), backend="transformers", speculative="prompt_lookup")
    with pytest.raises(ConfigError, match="llm.speculative=prompt_lookup runs on llm.backend=llamacpp only"):
        load_language_model(config, progress=False)


def test_prompt_lookup_gives_the_greedy_answer() -> None:
    """Speculative drafts are verified against the model: the greedy answer is the same with or without them.

    The second prompt passes llama.cpp's 512-token batch after a cached prefix (llama-cpp-python sized its
    logits buffer by the batch there unless logits_all was set, and overflowed).
    """
    from models.generate import SamplingParams

    context = " ".join(f"Room {i} opens at {i % 12 + 1}am." for i in range(60))
    long = [{"role": "user", "content": f"{context}\n\nWhen does room 7 open? Repeat the sentence."}]
    short = [{"role": "user", "content": "Room 1 opens at 2am."}]
    params = SamplingParams(max_new_tokens=40)
    answers = []
    for speculative in ("off", "prompt_lookup"):
        config = LLMConfig(model=SMOL, backend="llamacpp", context_window=1024, speculative=speculative)
        generator = load_language_model(config, progress=False).generator()
        assert generator.count_tokens(long[0]["content"]) > 512
        "".join(generator.stream(short, params))  # leaves a prefix of the long prompt cached
        answers.append("".join(generator.stream(long, params)))
    assert answers[0] and answers[0] == answers[1]


def test_a_prompt_sharing_the_last_ones_start_evaluates_only_the_rest(smol, monkeypatch: pytest.MonkeyPatch) -> None:
    """llama.cpp keeps the previous prompt's KV cache; the engine must not defeat it (RAG prompts share a prefix)."""
    from models.generate import SamplingParams

    evaluated: list[int] = []
    real = smol.llama.eval
    monkeypatch.setattr(smol.llama, "eval", lambda tokens: (evaluated.append(len(tokens)), real(tokens))[1])
    generator, params = smol.generator(), SamplingParams(max_new_tokens=2)
    other = [MESSAGES[0], {"role": "user", "content": "Context: the library closes at 5pm.\n\nQuestion: When?"}]
    first, second = generator.encode_chat(MESSAGES), generator.encode_chat(other)
    shared = next(i for i, (a, b) in enumerate(zip(first, second)) if a != b)
    assert shared > 10  # the system turn and the start of the user turn
    "".join(generator.stream(MESSAGES, params))
    evaluated.clear()
    "".join(generator.stream(other, params))
    assert evaluated[0] == len(second) - shared  # the prompt: only what differs from the last one

"""One suite for every generation engine (models.generate.GENERATOR_BACKENDS), each on a small model it runs.

A new engine passes by being added to BACKENDS: the same streaming, stop strings, usage, cancellation,
context-window and adapter behaviour is then required of it. transformers runs the tiny LM built in code;
llamacpp runs the packaged SmolLM2-135M GGUF (it loads in about a second); openai talks to a second
`ragtune serve` of the tiny LM on loopback.
"""

from collections.abc import Iterator
from pathlib import Path

import pytest

from models.config import LLMConfig
from models.engines.openai import OpenAILM
from models.errors import ModelError
from models.generate import GENERATOR_BACKENDS, AdapterRef, LanguageModel, SamplingParams, load_language_model
from tests.remote import ServedRagtune, served_ragtune

BACKENDS = ["transformers", "llamacpp", "openai"]
GGUF_MODEL = "smollm2-135m-instruct"
MESSAGES = [{"role": "user", "content": "When does the library open?"}]


def test_every_registered_backend_is_under_contract() -> None:
    assert sorted(BACKENDS) == sorted(GENERATOR_BACKENDS)


@pytest.fixture(scope="module", params=BACKENDS)
def lm(request: pytest.FixtureRequest, tiny_lm_path: Path) -> LanguageModel:
    model = GGUF_MODEL if request.param == "llamacpp" else str(tiny_lm_path)
    config = LLMConfig(model=model, backend=request.param, dtype="float32", context_window=512)
    if request.param == "openai":  # the same tiny LM behind a real `ragtune serve` on loopback
        config = request.getfixturevalue("served").llm(config)
    return load_language_model(config, progress=False)


@pytest.fixture(scope="module")
def served(tiny_lm_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedRagtune]:
    with served_ragtune(tiny_lm_path, tmp_path_factory.mktemp("served"), "serve.max_tokens_limit=600") as server:
        yield server


@pytest.fixture(scope="module")
def greedy_text(lm: LanguageModel) -> str:
    """The tiny LM's greedy answer; seeded weights make it fixed and long enough to cut (asserted, not skipped)."""
    text = "".join(lm.generator().stream(MESSAGES, SamplingParams(max_new_tokens=12)))
    assert len(text.strip()) >= 4, f"the tiny LM should answer at least 4 characters greedily, got {text!r}"
    return text


def test_stream_yields_text_and_reports_usage(lm: LanguageModel, greedy_text: str) -> None:
    stream = lm.generator().stream(MESSAGES, SamplingParams(max_new_tokens=12))
    assert "".join(stream) == greedy_text
    usage = stream.usage
    assert usage.prompt_tokens == _prompt_tokens(lm)
    assert usage.completion_tokens == 12 and usage.finish_reason == "length"
    assert usage.first_token_s is not None and usage.total_s >= usage.first_token_s > 0


def test_seeded_sampling_repeats_and_differs_from_greedy(lm: LanguageModel, greedy_text: str) -> None:
    params = SamplingParams(max_new_tokens=12, temperature=1.0, seed=7)
    first = "".join(lm.generator().stream(MESSAGES, params))
    assert first == "".join(lm.generator().stream(MESSAGES, params))
    assert first != greedy_text


def test_stop_string_cuts_the_text(lm: LanguageModel, greedy_text: str) -> None:
    stop = greedy_text.strip()[1]
    cut = "".join(lm.generator().stream(MESSAGES, SamplingParams(max_new_tokens=12, stop=(stop,))))
    assert stop not in cut and greedy_text.startswith(cut) and len(cut) < len(greedy_text)


def test_streamed_pieces_never_show_part_of_a_stop_string(lm: LanguageModel, greedy_text: str) -> None:
    stop = greedy_text.strip()[2:4]  # two characters from inside the answer
    shown = ""
    for piece in lm.generator().stream(MESSAGES, SamplingParams(max_new_tokens=12, stop=(stop,))):
        shown += piece
        assert stop not in shown
    assert greedy_text.startswith(shown)


def test_closing_the_stream_early_frees_the_model(lm: LanguageModel, greedy_text: str) -> None:
    stream = iter(lm.generator().stream(MESSAGES, SamplingParams(max_new_tokens=500)))
    next(stream)
    stream.close()  # a client that goes away: the engine must stop and let the next request in
    assert "".join(lm.generator().stream(MESSAGES, SamplingParams(max_new_tokens=12))) == greedy_text


def test_prompt_over_the_context_window_is_refused(lm: LanguageModel) -> None:
    long = [{"role": "user", "content": "library " * 600}]
    with pytest.raises(ModelError, match="over llm.context_window=512"):
        lm.generator().stream(long, SamplingParams())


def test_adapters_share_the_base_and_switch_per_request(
    lm: LanguageModel,
    greedy_text: str,
    tiny_lm_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> None:
    make = _random_gguf_lora if lm.backend == "llamacpp" else _random_lora
    adapters = [AdapterRef(f"a{i}", make(tiny_lm_path, tmp_path_factory.mktemp(f"a{i}"), i)) for i in (1, 2)]
    for adapter in adapters:
        if isinstance(lm, OpenAILM):  # a remote engine uses the adapters its server holds: put them there
            request.getfixturevalue("served").add_adapter(adapter.name, adapter.path)
        lm.load_adapter(adapter)
    params = SamplingParams(max_new_tokens=12)
    answers = {a.name: "".join(lm.generator(a.name).stream(MESSAGES, params)) for a in adapters}
    assert len({answers["a1"], answers["a2"], greedy_text}) == 3  # each adapter changes the answer its own way
    assert "".join(lm.generator().stream(MESSAGES, params)) == greedy_text  # the base is untouched
    assert "".join(lm.generator("a1").stream(MESSAGES, params)) == answers["a1"]  # and switching back works


def test_an_adapter_not_loaded_is_refused(lm: LanguageModel) -> None:
    with pytest.raises(ModelError, match="'missing' is not loaded"):
        lm.generator("missing")


def _prompt_tokens(lm: LanguageModel) -> int:
    """The chat prompt's length by the model's own template, rendered by transformers (not by the engine)."""
    from transformers import AutoTokenizer

    from models.loading import lm_folder

    tokenizer = AutoTokenizer.from_pretrained(lm_folder(lm.name, progress=False))
    prompt = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    # Tokenized as the template's text, its markers as control tokens (count_tokens reads text as text).
    return len(tokenizer(prompt, add_special_tokens=False)["input_ids"])


def _random_gguf_lora(_: Path, out: Path, seed: int) -> Path:
    """A random LoRA on the GGUF model, exported as the GGUF LoRA llama.cpp loads (adapter_model.gguf)."""
    from finetune.gguf_export import export_gguf_lora
    from models.gguf import gguf_file
    from models.presets import PRESETS
    from tests.gguf_lora_helpers import random_lora_folder

    folder = random_lora_folder(out / "adapter", GGUF_MODEL, seed, std=0.3)  # strong enough to change 12 tokens
    export_gguf_lora(folder, gguf_file(GGUF_MODEL), PRESETS[GGUF_MODEL].sha256)
    return folder


def _random_lora(base: Path, out: Path, seed: int) -> Path:
    """A LoRA adapter with random (not zero) B matrices, so it visibly changes the model's answers."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    config = LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(out, safe_serialization=True)
    return out


def test_the_greedy_answer_is_likelier_than_itself_reversed(lm: LanguageModel, greedy_text: str) -> None:
    assert greedy_text != greedy_text[::-1]
    choices = [greedy_text, greedy_text[::-1]]
    if _serves_no_logprobs(lm):
        with pytest.raises(ModelError, match="log-probabilities"):
            lm.generator().continuation_logprobs(MESSAGES, choices)
        return
    greedy, reversed_ = lm.generator().continuation_logprobs(MESSAGES, choices)
    assert greedy > reversed_


def _reference_logprob(lm: LanguageModel, messages: list[dict[str, str]], continuation: str) -> float:
    """The continuation's log-probability from one plain forward pass over prompt + continuation."""
    import torch

    gen = lm.generator()
    if lm.backend != "transformers":  # the reference below is a transformers forward pass
        pytest.skip(
            f"no plain forward pass to compare with for {lm.backend} (test_llamacpp compares it to transformers)"
        )
    prompt = gen.encode_chat(messages)
    cont = torch.tensor([gen.tokenizer(continuation, add_special_tokens=False)["input_ids"]])
    ids = torch.cat([prompt, cont], dim=1)
    with gen._activate(), torch.inference_mode():  # the base, even once adapters are loaded
        logits = gen.model(input_ids=ids).logits.float()
    logprobs = torch.log_softmax(logits[0, prompt.shape[1] - 1 : -1], dim=-1)
    return float(logprobs.gather(1, cont[0].unsqueeze(1)).sum())


def _serves_no_logprobs(lm: LanguageModel) -> bool:
    """The remote engine's server under test is a second `ragtune serve`, which has no /v1/completions."""
    return type(lm).__name__ == "OpenAILM"


def _skip_without_logprobs(lm: LanguageModel) -> None:
    if _serves_no_logprobs(lm):
        pytest.skip("the contract's remote server (ragtune serve) exposes no log-probabilities; its refusal is tested")


def test_continuation_logprobs_match_a_plain_forward_pass(lm: LanguageModel) -> None:
    _skip_without_logprobs(lm)
    # Continuations of different token lengths share one batched pass; each must equal its own full pass.
    choices = ["yes", "no", "maybe not at all", "Sundays and Mondays"]
    got = lm.generator().continuation_logprobs(MESSAGES, choices)
    assert len(got) == len(choices) and all(v < 0 for v in got)
    for value, choice in zip(got, choices):
        assert value == pytest.approx(_reference_logprob(lm, MESSAGES, choice), abs=1e-3)
    assert len(set(round(v, 4) for v in got)) == len(choices)  # distinct: the choices are really scored


def test_continuation_logprobs_refuse_empty_choices_and_long_prompts(lm: LanguageModel) -> None:
    _skip_without_logprobs(lm)
    with pytest.raises(ModelError, match="non-empty strings"):
        lm.generator().continuation_logprobs(MESSAGES, ["yes", ""])
    long = [{"role": "user", "content": "library " * 600}]
    with pytest.raises(ModelError, match="over llm.context_window=512"):
        lm.generator().continuation_logprobs(long, ["yes"])


def test_continuation_logprobs_follow_the_adapter(
    lm: LanguageModel, tiny_lm_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    _skip_without_logprobs(lm)
    lm.load_adapter(
        AdapterRef(
            "s1",
            (_random_gguf_lora if lm.backend == "llamacpp" else _random_lora)(
                tiny_lm_path, tmp_path_factory.mktemp("s1"), 3
            ),
        )
    )
    base = lm.generator().continuation_logprobs(MESSAGES, ["yes", "no"])
    adapted = lm.generator("s1").continuation_logprobs(MESSAGES, ["yes", "no"])
    assert adapted != pytest.approx(base, abs=1e-4)  # the adapter is active while scoring
    assert lm.generator().continuation_logprobs(MESSAGES, ["yes", "no"]) == pytest.approx(base, abs=1e-5)

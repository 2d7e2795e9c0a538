"""The embedder and llm sections: which models run, where, and how the LM samples."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from models.config.choices import LLMBackend, check


@dataclass(frozen=True)
class EmbedderConfig:
    # A preset name (`minilm-l6`), a trained embedder's name (`ragtune embedders list`) or a local folder.
    model: str = "minilm-l6"
    # Where embeddings are computed: auto | cpu | cuda.
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Chunks embedded per forward pass; larger is faster until memory runs out. embedder.backend=openai: chunks
    # per request (fewer when the server allows fewer).
    batch_size: int = 64
    # Where the vectors are computed: torch (embedder.model on this machine, PyTorch), onnx (embedder.model
    # exported once to ONNX under RAGTUNE_CACHE by `ragtune models prepare` or on first use, and run by
    # onnxruntime on the CPU: the same vectors) or openai (an OpenAI-compatible /v1/embeddings server at
    # embedder.base_url). embedder.model still cuts the chunks (its tokenizer) and names the index's embedder:
    # the server must serve that same model, which is checked before the first request.
    backend: Literal["torch", "onnx", "openai"] = "torch"
    # embedder.backend=onnx only: none (float32, torch's vectors) or int8 (the exported weights quantised to int8
    # per channel: a quarter of the file, vectors at a cosine of about 0.99 to float32's).
    quantize: Literal["none", "int8"] = "none"
    # embedder.backend=openai: the server's address (http://HOST:PORT or http://HOST:PORT/v1).
    base_url: str | None = None
    # embedder.backend=openai: a file holding the server's API key (sent as a Bearer token); null sends none.
    api_key_file: str | None = None
    # embedder.backend=openai: the model's name on the server; null uses embedder.model.
    served_model: str | None = None
    # embedder.backend=openai: seconds to wait for a connection to embedder.base_url.
    connect_timeout: float = 5.0
    # embedder.backend=openai: seconds to wait for any response byte (the first one includes the server's queue).
    read_timeout: float = 120.0
    # embedder.backend=openai: retries of a request answered 429 or 503 or not connected, waiting 0.5 s, 1 s, ...
    max_retries: int = 3

    def __post_init__(self) -> None:
        check(self.batch_size > 0, "embedder.batch_size", f"should be positive, got {self.batch_size}")
        check(
            self.backend in ("torch", "onnx", "openai"),
            "embedder.backend",
            f"should be one of torch | onnx | openai, got {self.backend!r}",
        )
        check(self.quantize in ("none", "int8"), "embedder.quantize", f"should be none or int8, got {self.quantize!r}")
        check(
            self.quantize == "none" or self.backend == "onnx",
            "embedder.quantize",
            f"{self.quantize} needs embedder.backend=onnx (got {self.backend}); set embedder.quantize=none "
            "or embedder.backend=onnx",
        )
        check(
            self.backend != "onnx" or self.device != "cuda",
            "embedder.device",
            "embedder.backend=onnx runs on the CPU (onnxruntime); set embedder.device=cpu or auto, "
            "or embedder.backend=torch for cuda",
        )
        if self.backend == "openai":
            check(
                bool(self.base_url),
                "embedder.base_url",
                "embedder.backend=openai needs the server's address, such as http://gpu-box:8080/v1",
            )
        check(
            self.base_url is None or self.base_url.startswith(("http://", "https://")),
            "embedder.base_url",
            f"should start with http:// or https://, got {self.base_url!r}",
        )
        check(
            self.served_model is None or bool(self.served_model.strip()),
            "embedder.served_model",
            "should be a model name or null (null uses embedder.model), got an empty name",
        )
        check(self.connect_timeout > 0, "embedder.connect_timeout", f"should be positive, got {self.connect_timeout}")
        check(self.read_timeout > 0, "embedder.read_timeout", f"should be positive, got {self.read_timeout}")
        check(self.max_retries >= 0, "embedder.max_retries", f"should be >= 0, got {self.max_retries}")


@dataclass(frozen=True)
class LLMConfig:
    # A preset name, a local Hugging Face folder or a path to a `.gguf` file.
    model: str = "qwen2.5-coder-0.5b-instruct"
    # The engine that runs the model: auto (llamacpp for a GGUF on the CPU when llama-cpp-python is installed,
    # else transformers), transformers (PyTorch; CPU or CUDA, PEFT adapters), llamacpp (the GGUF as it is,
    # on the CPU; GGUF LoRA adapters) or openai (a remote OpenAI-compatible server such as vLLM at
    # llm.base_url; llm.model then names the base locally).
    backend: Literal["auto", LLMBackend] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # auto picks bfloat16 where the CPU/GPU computes it natively, float32 otherwise.
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    max_new_tokens: int = 256
    # 0 means greedy decoding (deterministic answers).
    temperature: float = 0.0
    top_p: float = 1.0
    # Prompt tokens the model may see; longer prompts are refused with an error.
    context_window: int = 4096
    # CPU threads; null: torch's default for transformers, the cores this process may use for llamacpp.
    threads: int | None = None
    seed: int = 0
    # llm.backend=openai: the server's address (http://HOST:PORT or http://HOST:PORT/v1).
    base_url: str | None = None
    # llm.backend=openai: a file holding the server's API key (sent as a Bearer token); null sends none.
    api_key_file: str | None = None
    # llm.backend=openai: the model's name on the server; null uses llm.model.
    served_model: str | None = None
    # llm.backend=openai: seconds to wait for a connection to llm.base_url.
    connect_timeout: float = 5.0
    # llm.backend=openai: seconds to wait for any response byte (the first one includes the server's queue).
    read_timeout: float = 120.0
    # llm.backend=openai: retries of a request answered 429 or 503, waiting 0.5 s, 1 s, 2 s, ... between them.
    max_retries: int = 3
    # Speculative decoding: off, or prompt_lookup (draft tokens copied from the prompt; llamacpp only).
    speculative: Literal["off", "prompt_lookup"] = "off"

    def __post_init__(self) -> None:
        check(self.max_new_tokens > 0, "llm.max_new_tokens", f"should be positive, got {self.max_new_tokens}")
        check(self.temperature >= 0, "llm.temperature", f"should be >= 0, got {self.temperature}")
        check(0 < self.top_p <= 1, "llm.top_p", f"should be in (0, 1], got {self.top_p}")
        check(self.context_window > 0, "llm.context_window", f"should be positive, got {self.context_window}")
        check(self.threads is None or self.threads > 0, "llm.threads", f"should be positive, got {self.threads}")
        check(self.connect_timeout > 0, "llm.connect_timeout", f"should be positive, got {self.connect_timeout}")
        check(self.read_timeout > 0, "llm.read_timeout", f"should be positive, got {self.read_timeout}")
        check(self.max_retries >= 0, "llm.max_retries", f"should be >= 0, got {self.max_retries}")

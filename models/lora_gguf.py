"""The GGUF LoRA checks under the name the llama.cpp engine imports them by; they live in models/gguf/lora.py."""

from models.gguf.lora import BASE_SHA256_KEY, GGUF_LORA_FILE, SOURCE_SHA256_KEY, check_lora_gguf, check_lora_shapes

__all__ = ["BASE_SHA256_KEY", "GGUF_LORA_FILE", "SOURCE_SHA256_KEY", "check_lora_gguf", "check_lora_shapes"]

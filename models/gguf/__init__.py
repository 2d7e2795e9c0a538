"""GGUF files: the header reader and checks (reader.py), where a model's GGUF lies (files.py), the LoRA checks
llama.cpp needs (lora.py) and PEFT LoRA -> GGUF LoRA conversion (convert.py).

The reader's and files' names are re-exported here: `from models.gguf import gguf_file, read_gguf_header`.
"""

from models.gguf.files import gguf_file, is_gguf_model
from models.gguf.reader import (
    BaseGGUF,
    GGUFHeader,
    TensorInfo,
    check_gguf,
    gguf_pieces,
    gguf_sha256,
    pieces_sha256,
    read_gguf_header,
)

__all__ = [
    "BaseGGUF",
    "GGUFHeader",
    "TensorInfo",
    "check_gguf",
    "gguf_file",
    "gguf_pieces",
    "gguf_sha256",
    "is_gguf_model",
    "pieces_sha256",
    "read_gguf_header",
]

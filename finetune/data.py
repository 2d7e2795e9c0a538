"""Training data: detect and validate chat, prompt/completion, alpaca and raw files; tokenize with prompts masked."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.errors import ConfigError, InputError, ModelError
from models.storage import read_utf8, sha256_file
from models.text import show

FORMATS = ("prompt_completion", "chat", "alpaca", "raw")
ROLES = ("system", "user", "assistant")
TEXT_SUFFIXES = (".txt", ".md", ".markdown")
# The label torch's cross-entropy skips: prompt tokens add nothing to the loss.
IGNORE_INDEX = -100
SHAPES = {
    "prompt_completion": '{"prompt": "...", "completion": "..."}',
    "chat": '{"messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]}',
    "alpaca": '{"instruction": "...", "input": "... (optional)", "output": "..."}',
    "raw": '{"text": "..."}',
}
_JSON_SPACE = re.compile(r"[ \t\n\r]*")
# A record is a flat object (a chat record nests three levels); deeper values are refused as they are
# read, so nothing after the reader walks a structure deep enough to exhaust Python's recursion limit.
MAX_DEPTH = 32


class DataError(InputError):
    """A training data file or record is unusable; the message names `file:line`, the problem and the fix."""


@dataclass(frozen=True)
class Record:
    # Chat turns ({"role", "content"}) for the supervised formats; empty for raw documents.
    messages: tuple[dict[str, str], ...]
    # The document text, raw format only.
    text: str = ""
    # "file:line" of the record, for error messages and provenance.
    source: str = ""


def _read_text(path: Path) -> str:
    return read_utf8(path, DataError, "training data")


def _too_deep(path: Path, number: int) -> DataError:
    return DataError(
        f"{path}:{number}: a record nested more than {MAX_DEPTH} levels deep; "
        f"a record should be a flat object like {SHAPES['prompt_completion']}"
    )


def _depth(value: Any, limit: int) -> int:
    """How many levels of lists and objects `value` has, counted without recursion and up to `limit` + 1."""
    deepest, todo = 0, [(value, 0)]
    while todo and deepest <= limit:
        item, level = todo.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, level + 1)
            todo.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def _checked(path: Path, number: int, item: Any) -> Any:
    if _depth(item, MAX_DEPTH) > MAX_DEPTH:
        raise _too_deep(path, number)
    return item


def _jsonl_items(path: Path, text: str) -> Iterator[tuple[int, Any]]:
    # split("\n"), not splitlines(): JSON strings may hold U+2028, which splitlines() would break on.
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{path}:{number}: not valid JSON ({exc.msg}); each line should hold one complete JSON object"
            ) from None
        except RecursionError:  # nested past the decoder's own limit
            raise _too_deep(path, number) from None
        yield number, _checked(path, number, item)


def _line(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _json_array_items(path: Path, text: str) -> Iterator[tuple[int, Any]]:
    # Decode element by element (not json.loads) so each record keeps the line it starts on.
    decoder = json.JSONDecoder()
    pos = _JSON_SPACE.match(text, 0).end()
    if pos == len(text):
        return
    if text[pos] != "[":
        raise DataError(
            f"{path}:{_line(text, pos)}: a .json file should hold one JSON array of records; "
            "put one record per line in a .jsonl file instead"
        )
    pos = _JSON_SPACE.match(text, pos + 1).end()
    while not text.startswith("]", pos):
        number = _line(text, pos)
        try:
            item, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
        except RecursionError:
            raise _too_deep(path, number) from None
        yield number, _checked(path, number, item)
        pos = _JSON_SPACE.match(text, end).end()
        if text.startswith("]", pos):
            break
        if not text.startswith(",", pos):
            raise DataError(f"{path}:{_line(text, pos)}: not valid JSON (expected ',' or ']' after a record)")
        pos = _JSON_SPACE.match(text, pos + 1).end()
        if text.startswith("]", pos):
            raise DataError(f"{path}:{_line(text, pos)}: not valid JSON (a trailing comma before ']'); remove it")
    if text[pos + 1 :].strip():
        raise DataError(f"{path}:{_line(text, pos)}: unexpected text after the closing ']'")


def read_items(path: Path) -> Iterator[tuple[int, Any]]:
    """(line, decoded JSON value) per record of a .jsonl or .json (one array) file; bad JSON is a DataError."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _jsonl_items(path, _read_text(path))
    if suffix == ".json":
        return _json_array_items(path, _read_text(path))
    raise DataError(f"{path}: unsupported training data type {suffix!r}; use .jsonl, .json (one array), .txt or .md")


def _format_of(item: Any, where: str) -> str:
    if not isinstance(item, dict):
        raise DataError(f"{where}: each record should be a JSON object, got {show(item)}")
    # The most specific key wins; extra keys (id, source, chunk...) are provenance and are ignored.
    if "messages" in item:
        return "chat"
    if "prompt" in item or "completion" in item:
        return "prompt_completion"
    if "instruction" in item or "output" in item:
        return "alpaca"
    if "text" in item:
        return "raw"
    shapes = "; ".join(f"{fmt}: {shape}" for fmt, shape in SHAPES.items())
    raise DataError(f"{where}: no training fields in keys {sorted(item)}; a record should look like one of {shapes}")


def _string(item: dict[str, Any], key: str, fmt: str, where: str, optional: bool = False) -> str:
    if optional and item.get(key) is None:
        return ""
    if key not in item:
        raise DataError(f"{where}: missing the {key!r} field; a {fmt} record looks like {SHAPES[fmt]}")
    value = item[key]
    if not isinstance(value, str) or not (optional or value.strip()):
        raise DataError(f"{where}: {key!r} should be a non-empty string, got {show(value)}")
    return value


def _chat_turns(item: dict[str, Any], where: str) -> tuple[dict[str, str], ...]:
    messages = item["messages"]
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: 'messages' should be a non-empty list like {SHAPES['chat']}, got {show(messages)}")
    turns = []
    for n, message in enumerate(messages):
        if not isinstance(message, dict):
            raise DataError(f"{where}: messages[{n}] should be a {{'role', 'content'}} object, got {show(message)}")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise DataError(f"{where}: messages[{n}].role should be one of {', '.join(ROLES)}, got {show(role)}")
        if not isinstance(content, str) or not content.strip():
            raise DataError(f"{where}: messages[{n}].content should be a non-empty string, got {show(content)}")
        turns.append({"role": role, "content": content})
    roles = [turn["role"] for turn in turns]
    if roles[-1] != "assistant":
        raise DataError(
            f"{where}: the last message should be the assistant's reply (the turn the model learns), got "
            f"{roles[-1]!r}; add the reply or drop the trailing turns"
        )
    first = roles.index("assistant")
    if "user" not in roles[:first]:
        raise DataError(f"{where}: messages[{first}] (assistant) has no user message before it; start with a user turn")
    return tuple(turns)


def _record(fmt: str, item: dict[str, Any], where: str) -> Record:
    if fmt == "chat":
        return Record(_chat_turns(item, where), source=where)
    if fmt == "raw":
        return Record((), text=_string(item, "text", fmt, where), source=where)
    if fmt == "prompt_completion":
        prompt, reply = _string(item, "prompt", fmt, where), _string(item, "completion", fmt, where)
    else:
        prompt, reply = _string(item, "instruction", fmt, where), _string(item, "output", fmt, where)
        extra = _string(item, "input", fmt, where, optional=True)
        prompt += f"\n\n{extra}" if extra.strip() else ""
    return Record(({"role": "user", "content": prompt}, {"role": "assistant", "content": reply}), source=where)


def detect_format(path: Path) -> str:
    """The format of the first non-empty record: "prompt_completion" | "chat" | "alpaca" | "raw"."""
    if path.suffix.lower() in TEXT_SUFFIXES:
        return "raw"
    for number, item in read_items(path):
        return _format_of(item, f"{path}:{number}")
    raise DataError(f"{path}: holds no records; an empty file cannot be trained on")


def read_records(path: Path) -> tuple[str, list[Record]]:
    """(format, records) of a whole file, every record validated; the first bad one raises DataError."""
    if path.suffix.lower() in TEXT_SUFFIXES:
        text = _read_text(path)
        if not text.strip():
            raise DataError(f"{path}: holds no text; an empty file cannot be trained on")
        # One document, not one per paragraph: an eos between paragraphs would teach the model to stop mid-text.
        return "raw", [Record((), text=text, source=f"{path}:1")]
    fmt, first, records = "", 0, []
    for number, item in read_items(path):
        where = f"{path}:{number}"
        found = _format_of(item, where)
        if not fmt:
            fmt, first = found, number
        elif found != fmt:
            raise DataError(
                f"{where}: a {found} record, but line {first} made this a {fmt} file; "
                "keep one format per file (split it into two files)"
            )
        records.append(_record(fmt, item, where))
    if not records:
        raise DataError(f"{path}: holds no records; an empty file cannot be trained on")
    return fmt, records


def _encode(tokenizer: Any, text: str) -> list[int]:
    # verbose=False: long documents are cut here, so the "longer than the model maximum" warning is noise.
    return list(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])


def _eos(tokenizer: Any) -> int:
    if tokenizer.eos_token_id is None:
        raise ModelError("the tokenizer has no end-of-sequence token, so raw documents cannot be separated")
    return int(tokenizer.eos_token_id)


def _render(tokenizer: Any, messages: tuple[dict[str, str], ...], source: str, generation_prompt: bool) -> list[int]:
    from jinja2 import TemplateError

    if getattr(tokenizer, "chat_template", None) is None:
        raise ModelError("the tokenizer has no chat template; use an instruct model, or train on raw text")
    try:
        # The same call generation uses, so training sees exactly the tokens the model is prompted with.
        encoded = tokenizer.apply_chat_template(
            list(messages), tokenize=True, return_dict=True, add_generation_prompt=generation_prompt
        )
    except TemplateError as exc:  # templates reject some conversations, e.g. "roles must alternate"
        raise DataError(f"{source}: the model's chat template rejects this conversation ({exc})") from None
    return list(encoded["input_ids"])


def _special_ids(tokenizer: Any) -> set[int]:
    # all_special_ids misses added specials such as <|im_start|> that are not bos/eos/pad/unk.
    added = {i for i, token in tokenizer.added_tokens_decoder.items() if token.special}
    return set(tokenizer.all_special_ids) | added


def _chat_ids_and_labels(record: Record, tokenizer: Any) -> tuple[list[int], list[int]]:
    ids = _render(tokenizer, record.messages, record.source, False)
    labels = [IGNORE_INDEX] * len(ids)
    special = _special_ids(tokenizer)
    for i, message in enumerate(record.messages):
        if message["role"] != "assistant":
            continue
        prompt = _render(tokenizer, record.messages[:i], record.source, True)
        turn = _render(tokenizer, record.messages[: i + 1], record.source, False)
        if turn[: len(prompt)] != prompt or ids[: len(turn)] != turn:
            raise DataError(
                f"{record.source}: the model's chat template does not render messages[{i}] as a continuation of the "
                "earlier turns, so prompt tokens cannot be told from reply tokens; use a model whose template "
                "renders turns incrementally, or put one assistant turn per record"
            )
        reply = turn[len(prompt) :]
        # Learn up to the last special token (the end-of-turn marker, e.g. <|im_end|>) so the model learns to
        # stop; a newline the template adds after it is layout, not reply.
        ends = [k for k, token in enumerate(reply) if token in special]
        stop = len(prompt) + (ends[-1] + 1 if ends else len(reply))
        labels[len(prompt) : stop] = ids[len(prompt) : stop]
    return ids, labels


def tokenize_record(record: Record, tokenizer: Any, max_seq_len: int) -> dict[str, list[int]]:
    """input_ids / labels / attention_mask; labels are -100 on prompt tokens; cut to max_seq_len from the end."""
    if max_seq_len < 2:
        raise ConfigError(f"finetune.max_seq_len: should be at least 2, got {max_seq_len}")
    if record.messages:
        ids, labels = _chat_ids_and_labels(record, tokenizer)
    else:
        ids = _encode(tokenizer, record.text) + [_eos(tokenizer)]
        labels = list(ids)
    if all(label == IGNORE_INDEX for label in labels[:max_seq_len]):
        raise DataError(
            f"{record.source}: the prompt alone fills finetune.max_seq_len={max_seq_len} tokens (the record has "
            f"{len(ids)}), leaving nothing to learn; raise finetune.max_seq_len or shorten the prompt"
        )
    ids, labels = ids[:max_seq_len], labels[:max_seq_len]
    return {"input_ids": ids, "labels": labels, "attention_mask": [1] * len(ids)}


def pack_raw(records: list[Record], tokenizer: Any, max_seq_len: int) -> list[dict[str, list[int]]]:
    """Raw documents joined with eos and cut into max_seq_len blocks (the last may be shorter); labels = input_ids."""
    if max_seq_len < 2:
        raise ConfigError(f"finetune.max_seq_len: should be at least 2, got {max_seq_len}")
    eos = _eos(tokenizer)
    stream: list[int] = []
    for record in records:
        if record.messages:
            raise DataError(f"{record.source}: a chat record cannot be packed as raw text; use tokenize_record")
        stream += _encode(tokenizer, record.text) + [eos]
    blocks = []
    for start in range(0, len(stream), max_seq_len):
        ids = stream[start : start + max_seq_len]
        # The short tail is kept so a small corpus loses nothing; a single token predicts nothing, so it goes.
        if len(ids) >= 2:
            blocks.append({"input_ids": ids, "labels": list(ids), "attention_mask": [1] * len(ids)})
    return blocks


def dataset_sha256(path: Path) -> str:
    """Hex sha256 of the file bytes, recorded in adapter manifests."""
    return sha256_file(path)

"""Chat prompts whose message contents stay text: only the chat template's own markers become control tokens.

A retrieved document or a user message may hold the model's role markers (`<|im_end|><|im_start|>system`).
Tokenizing the rendered prompt whole with special tokens parsed would turn those into real control tokens,
letting a document forge a system turn. So the template is rendered with a placeholder in place of each
message's content, its own text is tokenized with special tokens parsed, and each content is tokenized as
plain text and put back where its placeholder stood. Plain-text tokenizing also skips the special-token scan,
whose cost grows with the square of the number of markers in a text.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import Any

Message = dict[str, str]
# Private-use characters around a message's index: no template writes them, and contents are swapped out.
_PLACEHOLDER = re.compile("\ue000(\\d+)\ue001")


# A content longer than this many characters per token of the budget is probed by its start first.
_PROBE_CHARS_PER_TOKEN = 16


def placeholder(index: int) -> str:
    return f"\ue000{index}\ue001"


def render_parts(render: Callable[[list[Message]], str], messages: list[Message]) -> list[tuple[str, bool]]:
    """The prompt `render` makes of `messages`, as (text, is_content) pieces in order, contents verbatim."""
    blanked = [{**m, "content": placeholder(i)} for i, m in enumerate(messages)]
    pieces = _PLACEHOLDER.split(render(blanked))
    parts: list[tuple[str, bool]] = []
    for position, piece in enumerate(pieces):
        if position % 2:  # the split's captured group: a message index
            parts.append((messages[int(piece)]["content"], True))
        elif piece:
            parts.append((piece, False))
    return parts


def encode_chat_text(
    render: Callable[[list[Message]], str],
    messages: list[Message],
    encode_markup: Callable[[str], list[int]],
    encode_text: Callable[[str], list[int]],
    budget: int | None = None,
) -> list[int]:
    """The chat prompt's token ids: the template's text through `encode_markup` (special tokens parsed), each
    message content through `encode_text` (special tokens as ordinary text).

    With a `budget` (the context window), a content far longer than it could fit is first tokenized in part:
    when that part alone is over the budget, the ids so far are returned (more than `budget` of them, for the
    caller to refuse) without tokenizing the rest, so a huge message is refused in the time of a small one.
    """
    ids: list[int] = []
    for text, is_content in render_parts(render, messages):
        if is_content and budget is not None and len(text) > budget * _PROBE_CHARS_PER_TOKEN:
            probe = encode_text(text[: budget * _PROBE_CHARS_PER_TOKEN])
            if len(ids) + len(probe) > budget:
                return ids + probe
        ids.extend(encode_text(text) if is_content else encode_markup(text))
    return ids


# A Hugging Face fast tokenizer keeps `split_special_tokens` as state that each call sets before it encodes:
# two threads tokenizing at once (a template's markers, another request's text) must not see each other's.
_SPLIT_FLAG = threading.Lock()


def hf_text_ids(tokenizer: Any, text: str) -> list[int]:
    """`text`'s ids from a Hugging Face tokenizer, special-token strings in it read as ordinary text."""
    with _SPLIT_FLAG:
        return tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]


def hf_markup_ids(tokenizer: Any, text: str) -> list[int]:
    """A chat template's own text from a Hugging Face tokenizer, its special-token strings as control tokens."""
    with _SPLIT_FLAG:
        return tokenizer(text, add_special_tokens=False, split_special_tokens=False)["input_ids"]

"""The stream logic every engine shares (models.generate.DecodeStream), driven by scripted decoding steps.

Engines only report steps (the answer's text so far and its token count); these tests pin down what the
client then sees, independently of any model: pieces, stop strings, finish reasons, cancellation.
"""

from collections.abc import Iterator

import pytest

from models.errors import ModelError
from models.generate import DecodeStream, SamplingParams, Step, find_stop, held_back


class ScriptedEngine:
    """Yields one Step per scripted token text; records whether it was closed, as a real engine must be."""

    def __init__(self, tokens: list[str], fail_at: int | None = None, texts: list[str] | None = None) -> None:
        self.tokens, self.fail_at = tokens, fail_at
        # The text so far after each token; engines decode all ids each time, so a character split over two
        # tokens shows as U+FFFD first and whole after.
        self.texts = texts or ["".join(tokens[: i + 1]) for i in range(len(tokens))]
        self.consumed = 0
        self.closed = False

    def steps(self) -> Iterator[Step]:
        try:
            for i, text in enumerate(self.texts):
                if i == self.fail_at:
                    raise RuntimeError("device lost")
                self.consumed += 1
                yield Step(text, i + 1)
        finally:
            self.closed = True


def run(tokens: list[str], **params) -> tuple[list[str], DecodeStream, ScriptedEngine]:
    engine = ScriptedEngine(tokens)
    stream = DecodeStream("scripted", engine.steps(), SamplingParams(**params))
    return list(stream), stream, engine


def test_pieces_add_up_to_the_text_and_usage_counts_tokens() -> None:
    pieces, stream, engine = run(["The", " library", " opens", "."], max_new_tokens=10)
    assert pieces == ["The", " library", " opens", "."]
    assert stream.usage.completion_tokens == 4 and stream.usage.finish_reason == "stop"
    assert stream.usage.first_token_s is not None and stream.usage.total_s >= stream.usage.first_token_s
    assert engine.closed


def test_reaching_max_new_tokens_is_a_length_finish() -> None:
    _, stream, _ = run(["a", "b", "c"], max_new_tokens=3)
    assert stream.usage.finish_reason == "length"


def test_a_stop_string_cuts_the_text_and_stops_the_engine() -> None:
    pieces, stream, engine = run(["Nine", " o'clock", "\n\n", "Question", ":", " more"], stop=("\n\nQuestion",))
    assert "".join(pieces) == "Nine o'clock"
    assert engine.consumed == 4 and engine.closed  # decoding ended at the stop string, not at the last token
    assert stream.usage.finish_reason == "stop" and stream.usage.completion_tokens == 4


def test_a_stop_string_hit_on_the_last_allowed_token_is_a_stop_finish() -> None:
    _, stream, _ = run(["a", "b", "END"], max_new_tokens=3, stop=("END",))
    assert stream.usage.finish_reason == "stop"


def test_no_piece_ever_shows_the_start_of_a_stop_string() -> None:
    pieces, _, _ = run(["ans", "wer E", "N", "D", " tail"], stop=("END",))
    assert pieces == ["ans", "wer "]  # "E" and "EN" were held back until "END" decided them


def test_a_held_back_ending_that_is_no_stop_string_is_released() -> None:
    pieces, _, _ = run(["wait", " E", "N"], stop=("END",))
    assert pieces == ["wait", " ", "EN"]  # "E", then "EN", held until the engine finished


def test_half_a_multibyte_character_is_not_shown() -> None:
    engine = ScriptedEngine(["caf", "?", "?"], texts=["caf", "caf\ufffd", "caf\u00e9"])
    pieces = list(DecodeStream("scripted", engine.steps(), SamplingParams()))
    assert pieces == ["caf", "\u00e9"]


def test_a_consumer_that_leaves_closes_the_engine() -> None:
    engine = ScriptedEngine(["a", "b", "c", "d"])
    stream = iter(DecodeStream("scripted", engine.steps(), SamplingParams()))
    assert next(stream) == "a"
    stream.close()  # a client that disconnects
    assert engine.closed and engine.consumed == 1


def test_an_engine_failure_is_a_model_error_naming_the_engine() -> None:
    engine = ScriptedEngine(["a", "b"], fail_at=1)
    stream = DecodeStream("scripted", engine.steps(), SamplingParams())
    with pytest.raises(ModelError, match="generation failed in scripted: device lost"):
        list(stream)
    assert engine.closed and stream.usage.completion_tokens == 1


def test_held_back_is_the_longest_ending_that_starts_a_stop_string() -> None:
    assert held_back("answer E", ("END",)) == 1
    assert held_back("answer EN", ("END",)) == 2
    assert held_back("answer END", ("END",)) == 0  # a whole stop string is cut, not held
    assert held_back("answer", ("END", "\n\n")) == 0
    assert held_back("line\n", ("END", "\n\n")) == 1
    assert held_back("", ("END",)) == 0 and held_back("abc", ()) == 0


def test_find_stop_takes_the_earliest_stop_string() -> None:
    assert find_stop("a END b\n\n", ("\n\n", "END")) == 2
    assert find_stop("nothing here", ("END",)) is None

"""Stop strings: what the stream holds back so a client never sees the start of a stop string."""

from models.generate import _find_stop, held_back


def test_held_back_is_the_longest_ending_that_starts_a_stop_string() -> None:
    assert held_back("answer E", ("END",)) == 1
    assert held_back("answer EN", ("END",)) == 2
    assert held_back("answer END", ("END",)) == 0  # a whole stop string is cut, not held
    assert held_back("answer", ("END", "\n\n")) == 0
    assert held_back("line\n", ("END", "\n\n")) == 1
    assert held_back("", ("END",)) == 0 and held_back("abc", ()) == 0


def test_find_stop_takes_the_earliest_stop_string() -> None:
    assert _find_stop("a END b\n\n", ("\n\n", "END")) == 2
    assert _find_stop("nothing here", ("END",)) is None

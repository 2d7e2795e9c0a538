import copy
import hashlib
import json
import re
from pathlib import Path

import pytest

from finetune.data import (
    IGNORE_INDEX,
    DataError,
    Record,
    dataset_sha256,
    detect_format,
    pack_raw,
    read_records,
    tokenize_record,
)
from models.errors import InputError, ModelError

END = "<|im_end|>"


@pytest.fixture(scope="module")
def tokenizer(tiny_lm_path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_lm_path)


def jsonl(path: Path, *records: object) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def learned(example: dict[str, list[int]], tokenizer) -> str:
    """The text of the tokens that carry a label, which must equal their input id."""
    pairs = [(i, label) for i, label in zip(example["input_ids"], example["labels"]) if label != IGNORE_INDEX]
    assert all(i == label for i, label in pairs)
    return tokenizer.decode([i for i, _ in pairs])


PC = {"prompt": "When does the library open?", "completion": "At nine."}
CHAT = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]}
CHAT_TURNS = tuple(CHAT["messages"])
ALPACA = {"instruction": "Name the card.", "input": "Non-resident", "output": "Forty-five dollars."}


@pytest.mark.parametrize(
    "name,content,expected",
    [
        ("pc.jsonl", "\n" + json.dumps(PC) + "\n", "prompt_completion"),
        ("chat.jsonl", json.dumps(CHAT), "chat"),
        ("alpaca.jsonl", json.dumps(ALPACA), "alpaca"),
        ("alpaca.json", json.dumps([ALPACA, {"instruction": "a", "output": "b"}], indent=2), "alpaca"),
        ("raw.jsonl", json.dumps({"text": "A document.", "source": "a.md"}), "raw"),
        ("notes.txt", "Plain text.\n\nSecond paragraph.", "raw"),
        ("notes.md", "# Title\nBody", "raw"),
    ],
)
def test_detect_format_and_read(tmp_path: Path, name: str, content: str, expected: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    assert detect_format(path) == expected
    fmt, records = read_records(path)
    assert fmt == expected and records and all(r.source.startswith(f"{path}:") for r in records)


def test_records_become_chat_turns_with_line_sources(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text(json.dumps({**PC, "id": 7, "chunk": "c1"}) + "\n\n" + json.dumps(PC) + "\n")
    fmt, records = read_records(path)
    user, assistant = {"role": "user", "content": PC["prompt"]}, {"role": "assistant", "content": PC["completion"]}
    assert records[0] == Record((user, assistant), source=f"{path}:1")
    assert records[1].source == f"{path}:3"

    array = tmp_path / "b.json"
    array.write_text(json.dumps([ALPACA, {"instruction": "Say hi.", "input": "", "output": "Hi."}], indent=2))
    fmt, records = read_records(array)
    assert records[0].messages[0]["content"] == "Name the card.\n\nNon-resident"
    assert records[1].messages == ({"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "Hi."})
    assert [r.source for r in records] == [f"{array}:2", f"{array}:7"]

    text = tmp_path / "doc.txt"
    text.write_text("Para one.\n\nPara two.\n")
    assert read_records(text) == ("raw", [Record((), text="Para one.\n\nPara two.\n", source=f"{text}:1")])


BAD_JSONL = [
    ("not JSON", [json.dumps(PC), "{broken"], 2, "not valid JSON"),
    ("missing key", [json.dumps({"prompt": "x"})], 1, "missing the 'completion' field"),
    ("wrong type", [json.dumps(PC), json.dumps({"prompt": "x", "completion": 3})], 2, "'completion' should be"),
    ("blank", [json.dumps({"instruction": "x", "output": "  "})], 1, "'output' should be a non-empty string"),
    ("not object", [json.dumps([1, 2])], 1, "should be a JSON object"),
    ("unknown keys", [json.dumps({"question": "x"})], 1, "no training fields"),
    ("mixed", [json.dumps(PC), json.dumps(CHAT)], 2, "a chat record, but line 1 made this a prompt_completion"),
    ("role", [json.dumps({"messages": [{"role": "bot", "content": "x"}]})], 1, r"messages\[0\]\.role"),
    ("content", [json.dumps({"messages": [{"role": "user", "content": None}]})], 1, r"messages\[0\]\.content"),
    ("empty messages", [json.dumps({"messages": []})], 1, "non-empty list"),
    ("last not assistant", [json.dumps({"messages": [*CHAT_TURNS, {"role": "user", "content": "?"}]})], 1, "last"),
    ("assistant first", [json.dumps({"messages": [{"role": "assistant", "content": "x"}]})], 1, "no user message"),
    ("alpaca input type", [json.dumps({**ALPACA, "input": ["x"]})], 1, "'input' should be"),
]


@pytest.mark.parametrize("case,lines,line,message", BAD_JSONL, ids=[c[0] for c in BAD_JSONL])
def test_bad_line_names_file_and_line(tmp_path: Path, case: str, lines: list[str], line: int, message: str) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=message) as info:
        read_records(path)
    assert f"train.jsonl:{line}:" in str(info.value)
    assert isinstance(info.value, InputError)


@pytest.mark.parametrize(
    "content,line,message",
    [
        ('[\n  {"instruction": "a", "output": "b"},\n  {"instruction": "a"}\n]', 3, "missing the 'output' field"),
        ('[\n  {"instruction": "a", "output": "b"},\n]', 3, "trailing comma"),
        ('[\n  {"instruction": "a", "output": "b"}\n  {"instruction": "a"}\n]', 3, "expected ',' or ']'"),
        ('[\n  {"instruction": "a", "output": \n', 3, "not valid JSON"),
        ('{"instruction": "a", "output": "b"}', 1, "one JSON array"),
    ],
)
def test_bad_json_array_names_the_line(tmp_path: Path, content: str, line: int, message: str) -> None:
    path = tmp_path / "set.json"
    path.write_text(content)
    with pytest.raises(DataError, match=message) as info:
        read_records(path)
    assert f"set.json:{line}:" in str(info.value)


@pytest.mark.parametrize("name,content", [("e.jsonl", ""), ("e.jsonl", "\n  \n"), ("e.json", "[]"), ("e.txt", " \n")])
def test_empty_file_is_an_error(tmp_path: Path, name: str, content: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError, match=re.escape(str(path)) + ": holds no"):
        read_records(path)


def test_unsupported_type_and_binary(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("prompt,completion\n")
    with pytest.raises(DataError, match="unsupported training data type '.csv'"):
        detect_format(tmp_path / "a.csv")
    (tmp_path / "b.jsonl").write_bytes(b'{"text": "\x00"}')
    with pytest.raises(DataError, match="looks binary"):
        read_records(tmp_path / "b.jsonl")


def test_completion_is_learned_with_end_of_turn_and_prompt_is_masked(tokenizer) -> None:
    record = Record(({"role": "user", "content": PC["prompt"]}, {"role": "assistant", "content": PC["completion"]}))
    example = tokenize_record(record, tokenizer, 512)
    assert learned(example, tokenizer) == PC["completion"] + END
    # Same tokens as generation's prompt, so training and inference agree.
    rendered = tokenizer.apply_chat_template(list(record.messages), tokenize=True, return_dict=True)["input_ids"]
    assert example["input_ids"] == list(rendered) and example["attention_mask"] == [1] * len(rendered)
    assert example["labels"][-1] == IGNORE_INDEX  # the template's newline after <|im_end|> is layout


def test_alpaca_record_learns_only_the_output(tmp_path: Path, tokenizer) -> None:
    _, [record] = read_records(jsonl(tmp_path / "a.jsonl", ALPACA))
    example = tokenize_record(record, tokenizer, 512)
    assert learned(example, tokenizer) == ALPACA["output"] + END
    assert "Name the card.\n\nNon-resident" in tokenizer.decode(example["input_ids"])


def test_multi_turn_chat_learns_every_assistant_turn(tokenizer) -> None:
    turns = [("system", "Be brief."), ("user", "Open when?"), ("assistant", "At nine."), ("user", "Cost?")]
    record = Record(tuple({"role": r, "content": c} for r, c in turns + [("assistant", "Forty-five.")]))
    example = tokenize_record(record, tokenizer, 512)
    assert learned(example, tokenizer) == f"At nine.{END}Forty-five.{END}"


def test_truncation_keeps_the_start_and_refuses_an_all_prompt_example(tokenizer) -> None:
    record = Record(
        ({"role": "user", "content": "The library opens at nine. " * 4}, {"role": "assistant", "content": "Yes."}),
        source="t.jsonl:4",
    )
    full = tokenize_record(record, tokenizer, 4096)
    prompt_len = full["labels"].index(next(label for label in full["labels"] if label != IGNORE_INDEX))
    cut = tokenize_record(record, tokenizer, prompt_len + 1)
    assert cut["input_ids"] == full["input_ids"][: prompt_len + 1]
    assert cut["labels"][-1] == cut["input_ids"][-1] and len(cut["attention_mask"]) == prompt_len + 1
    with pytest.raises(DataError, match=r"t\.jsonl:4: .*finetune\.max_seq_len"):
        tokenize_record(record, tokenizer, prompt_len)


def test_raw_record_learns_every_token_and_ends_with_eos(tokenizer) -> None:
    record = Record((), text="A non-resident card.")
    example = tokenize_record(record, tokenizer, 512)
    assert example["labels"] == example["input_ids"] and example["input_ids"][-1] == tokenizer.eos_token_id
    assert tokenize_record(record, tokenizer, 3)["input_ids"] == example["input_ids"][:3]


def test_pack_raw_cuts_eos_joined_documents_into_blocks(tokenizer) -> None:
    docs = [Record((), text="The library opens at nine. " * 3), Record((), text="Cards cost forty-five dollars.")]
    blocks = pack_raw(docs, tokenizer, 8)
    eos = tokenizer.eos_token_id
    stream = [i for d in docs for i in tokenizer(d.text, add_special_tokens=False)["input_ids"] + [eos]]
    packed = [i for b in blocks for i in b["input_ids"]]
    # Nothing is lost except a lone final token, which would predict nothing.
    assert packed == stream[: len(packed)] and len(stream) - len(packed) in (0, 1)
    assert all(len(b["input_ids"]) == 8 for b in blocks[:-1]) and 2 <= len(blocks[-1]["input_ids"]) <= 8
    assert all(b["labels"] == b["input_ids"] and b["attention_mask"] == [1] * len(b["input_ids"]) for b in blocks)
    with pytest.raises(DataError, match="x:1: a chat record"):
        pack_raw([Record(CHAT_TURNS, source="x:1")], tokenizer, 8)


def test_template_that_breaks_the_prefix_property_is_refused(tokenizer) -> None:
    odd = copy.deepcopy(tokenizer)
    # The generation prompt says "bot" but replies render as "assistant": reply tokens cannot be located.
    prompt = "<|im_start|>assistant\n{% endif %}"
    odd.chat_template = tokenizer.chat_template.replace(prompt, prompt.replace("assistant", "bot"))
    with pytest.raises(DataError, match=r"c:2: .*does not render messages\[1\]"):
        tokenize_record(Record(CHAT_TURNS, source="c:2"), odd, 512)
    odd.chat_template = None
    with pytest.raises(ModelError, match="no chat template"):
        tokenize_record(Record(CHAT_TURNS, source="c:2"), odd, 512)


def test_dataset_sha256_hashes_the_file_bytes(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "a.jsonl", PC)
    assert dataset_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()

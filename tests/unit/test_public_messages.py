"""What the server tells a client about its own files: names, never where they live."""

from ragtune.serve.errors import model_label, public


def test_absolute_paths_are_cut_to_their_last_part() -> None:
    message = "/srv/data/indexes/default/CURRENT should name a generation; rebuild with `ragtune ingest --rebuild DOCS`"
    assert public(message) == "CURRENT should name a generation; rebuild with `ragtune ingest --rebuild DOCS`"
    assert public("adapter 'x' is damaged: /home/u/.local/a/x/w.safetensors is not readable (bad header)") == (
        "adapter 'x' is damaged: w.safetensors is not readable (bad header)"
    )
    assert public("no documents indexed in /var/lib/ragtune/indexes/default/; run it") == (
        "no documents indexed in (folder); run it"
    )


def test_text_without_paths_and_relative_names_are_unchanged() -> None:
    for text in ("max_tokens should be <= 64", "see docs/guide.md and a/b", "50/50 odds", "http://host/x"):
        assert public(text) == text


def test_model_label_keeps_presets_and_shortens_paths() -> None:
    assert model_label("qwen2.5-coder-0.5b-instruct") == "qwen2.5-coder-0.5b-instruct"
    assert model_label("/models/my-llama") == "my-llama"


def test_file_names_reach_the_terminal_escaped() -> None:
    from models.text import printable

    assert printable("notes\nskipped other.txt: fake") == "notes\\x0askipped other.txt: fake"
    assert printable("\x1b[2Jreport.md") == "\\x1b[2Jreport.md"
    assert printable("caf\u00e9 \u202eexe.txt") == "caf\u00e9 \\u202eexe.txt"  # letters stay, bidi overrides do not

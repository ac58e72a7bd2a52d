"""Thought-block stripping and sentence splitting, fed the way the model streams."""

from __future__ import annotations

import pytest

from edge_assistant.llm.reply_text import HiddenBlockFilter, SentenceSplitter, strip_hidden_blocks


def stream(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def filtered(pieces: list[str]) -> str:
    hidden = HiddenBlockFilter()
    return "".join(hidden.feed(piece) for piece in pieces) + hidden.flush()


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 1000])
def test_thought_block_removed_however_the_stream_is_cut(size: int) -> None:
    text = "<|channel>thought\nThe user asks about tea. Keep it short.<channel|>Green tea has less caffeine."
    assert filtered(stream(text, size)) == "Green tea has less caffeine."


def test_text_around_several_blocks_is_kept() -> None:
    text = "Sure. <|channel>thought\nx<channel|>It is 5 pm.<|tool_call>call:clock{}<tool_call|> Bye."
    assert strip_hidden_blocks(text) == "Sure. It is 5 pm. Bye."


def test_unterminated_thought_is_never_spoken() -> None:
    hidden = HiddenBlockFilter()
    assert hidden.feed("Hello. <|channel>thought\nI should say") == "Hello. "
    assert hidden.flush() == ""


def test_partial_marker_is_held_until_decided() -> None:
    hidden = HiddenBlockFilter()
    assert hidden.feed("a <|chan") == "a "
    assert hidden.feed("ge") == "<|change"
    assert hidden.flush() == ""


def test_lone_less_than_sign_is_spoken() -> None:
    assert strip_hidden_blocks("3 < 4 and 5 > 2") == "3 < 4 and 5 > 2"


def test_stray_control_tokens_are_dropped() -> None:
    assert strip_hidden_blocks("Hi there<turn|>") == "Hi there"
    assert strip_hidden_blocks("<|\"|>quoted<|\"|>") == "quoted"
    assert strip_hidden_blocks("a<unused5079>b") == "ab"


def split_all(text: str, size: int) -> list[str]:
    splitter = SentenceSplitter()
    sentences: list[str] = []
    for piece in stream(text, size):
        sentences += splitter.feed(piece)
    return sentences + splitter.flush()


@pytest.mark.parametrize("size", [1, 4, 1000])
def test_sentences_released_as_they_complete(size: int) -> None:
    text = "It is sunny today! Take a hat. Dr. Smith agrees, e.g. for long walks. Anything else?"
    assert split_all(text, size) == [
        "It is sunny today!",
        "Take a hat.",
        "Dr. Smith agrees, e.g. for long walks.",
        "Anything else?",
    ]


def test_first_sentence_available_before_the_rest() -> None:
    splitter = SentenceSplitter()
    assert splitter.feed("The answer is 42. And") == ["The answer is 42."]
    assert splitter.feed(" more") == []
    assert splitter.flush() == ["And more"]


def test_decimal_numbers_and_quotes() -> None:
    assert split_all('Pi is 3.14 roughly. He said "stop." Then left.', 3) == [
        "Pi is 3.14 roughly.",
        'He said "stop."',
        "Then left.",
    ]


def test_newlines_end_sentences_and_markdown_is_not_read_aloud() -> None:
    assert split_all("**Tip**: drink water\n- rest well\n", 5) == ["Tip: drink water", "- rest well"]


def test_run_on_text_is_cut_so_first_audio_is_not_delayed() -> None:
    text = "word " * 100
    sentences = split_all(text, 9)
    assert len(sentences) >= 2
    assert all(len(sentence) <= 220 for sentence in sentences)
    assert " ".join(sentences).split() == text.split()


def test_punctuation_only_is_not_spoken() -> None:
    assert split_all("... !!", 2) == []

"""From the model's token stream to what may be spoken, one sentence at a time.

Two streaming filters, both fed text pieces as the model produces them:
:class:`HiddenBlockFilter` drops thought blocks (``<|channel>thought … <channel|>``)
and tool-call blocks (``tool_loop`` runs the calls) so they never reach the
speaker; :class:`SentenceSplitter` releases whole sentences so Piper can start
speaking the first one while the model is still writing the rest.
"""

from __future__ import annotations

import re

# Blocks the model may emit that are not for the listener: opening marker -> closing marker.
HIDDEN_BLOCKS = {
    "<|channel>": "<channel|>",
    "<|tool_call>": "<tool_call|>",
}
# Stray marker tokens that carry no speech (Gemma's vocabulary types its
# <unusedN> placeholders as normal text).
CONTROL_TOKEN = re.compile(r"<\|[a-z_\"]+\|?>|<[a-z_\"]+\|>|<unused\d+>")


class HiddenBlockFilter:
    """Removes hidden blocks from a stream of text pieces.

    A marker may arrive split across pieces, so text that could be the start of
    a marker is held back until the next piece decides. An unterminated block
    is dropped at :meth:`flush`: a half thought is never spoken.
    """

    def __init__(self) -> None:
        self._pending = ""
        self._closing: str | None = None  # the marker that ends the current hidden block

    def feed(self, piece: str) -> str:
        self._pending += piece
        visible: list[str] = []
        while self._pending:
            if self._closing is not None:
                end = self._pending.find(self._closing)
                if end < 0:
                    # Keep only a possible partial closing marker.
                    self._pending = self._pending[-(len(self._closing) - 1) :] if len(self._closing) > 1 else ""
                    break
                self._pending = self._pending[end + len(self._closing) :]
                self._closing = None
                continue
            start, opening = self._first_opening()
            if opening is None:
                keep = self._partial_marker_length()
                visible.append(self._pending[: len(self._pending) - keep])
                self._pending = self._pending[len(self._pending) - keep :]
                break
            visible.append(self._pending[:start])
            self._pending = self._pending[start + len(opening) :]
            self._closing = HIDDEN_BLOCKS[opening]
        return CONTROL_TOKEN.sub("", "".join(visible))

    def flush(self) -> str:
        rest = "" if self._closing is not None else self._pending
        self._pending, self._closing = "", None
        return CONTROL_TOKEN.sub("", rest)

    def _first_opening(self) -> tuple[int, str | None]:
        found = [(self._pending.find(marker), marker) for marker in HIDDEN_BLOCKS]
        found = [(index, marker) for index, marker in found if index >= 0]
        return min(found) if found else (-1, None)

    def _partial_marker_length(self) -> int:
        """Length of the longest suffix of the pending text that starts a marker."""
        longest = 0
        for marker in HIDDEN_BLOCKS:
            for length in range(1, len(marker)):
                if self._pending.endswith(marker[:length]):
                    longest = max(longest, length)
        return longest


def strip_hidden_blocks(text: str) -> str:
    """The whole-text form of :class:`HiddenBlockFilter`."""
    text_filter = HiddenBlockFilter()
    return text_filter.feed(text) + text_filter.flush()


ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof st sr jr vs etc e.g i.e approx no fig mt ft".split()
)
SENTENCE_END = re.compile(r"([.!?…]+[\"')\]]*)(\s+)")
# A sentence without an end is still released once it gets this long, so a
# run-on answer does not delay the first audio.
MAX_SENTENCE_CHARS = 220
MARKDOWN = re.compile(r"[*_#`]+")


class SentenceSplitter:
    """Buffers streamed text and releases complete sentences."""

    def __init__(self) -> None:
        self._buffer = ""

    def feed(self, text: str) -> list[str]:
        self._buffer += text
        sentences: list[str] = []
        while True:
            cut = self._next_cut()
            if cut is None:
                break
            sentence, self._buffer = self._buffer[:cut], self._buffer[cut:]
            sentences.extend(_speakable(sentence))
        return sentences

    def flush(self) -> list[str]:
        rest, self._buffer = self._buffer, ""
        return _speakable(rest)

    @property
    def pending(self) -> str:
        """Text fed and not yet released: the beginning of the next sentence."""
        return self._buffer

    def _next_cut(self) -> int | None:
        newline = self._buffer.find("\n")
        for match in SENTENCE_END.finditer(self._buffer):
            if newline >= 0 and newline < match.start():
                break
            words = self._buffer[: match.start(1)].split()
            last_word = words[-1].lower().rstrip(".") if words else ""
            if match.group(1).startswith(".") and last_word in ABBREVIATIONS:
                continue
            return match.end()
        if newline >= 0:
            return newline + 1
        if len(self._buffer) > MAX_SENTENCE_CHARS:
            head = self._buffer[:MAX_SENTENCE_CHARS]
            split_at = max(head.rfind(", "), head.rfind("; "), head.rfind(" "))
            return split_at + 1 if split_at > 0 else MAX_SENTENCE_CHARS
        return None


def _speakable(sentence: str) -> list[str]:
    cleaned = " ".join(MARKDOWN.sub("", sentence).split())
    return [cleaned] if any(char.isalnum() for char in cleaned) else []

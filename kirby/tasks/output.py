"""A run's output as lines: chunks read from a pipe become complete lines, decoded and masked in bulk.

``LineSplitter`` turns the chunks of one stream into complete lines (bytes), cutting a line over
MAX_LINE bytes (its end is dropped, a marker says how many bytes). A line is only ever handed on
complete, so a secret (or a multi-byte character) split over two reads is whole again before it
is masked. ``mask_lines`` decodes and masks a list of complete lines with one decode and one
masking pass over their joined text (secret pieces hold no newline, so no mask spans two lines),
then masks the start of a secret left at a cut (its end was dropped).
"""

from __future__ import annotations

import re

from kirby.tasks.masking import Masker

MAX_LINE = 64 * 1024  # bytes; longer lines are cut with CUT_MARKER
CUT_MARKER = " [... line cut by kirby: {} more bytes]"
_CUT_PREFIX = CUT_MARKER.partition("{}")[0]
_CUT_AT_END = re.compile(re.escape(CUT_MARKER).replace(r"\{\}", r"\d+") + "$")


class LineSplitter:
    """Turns chunks of one stream into complete lines, cutting lines over MAX_LINE bytes."""

    def __init__(self):
        self.pending = bytearray()
        self.dropped = 0  # bytes dropped from the current (cut) line

    def feed(self, chunk: bytes) -> list[bytes]:
        parts = chunk.split(b"\n")
        if len(parts) == 1:
            self._append(chunk)
            return []
        self._append(parts[0])
        lines = [self._take()]
        middle = parts[1:-1]
        if len(chunk) <= MAX_LINE or max(map(len, middle), default=0) <= MAX_LINE:  # none too long (C speed)
            lines += middle
        else:
            lines += [part if len(part) <= MAX_LINE else _cut(part) for part in middle]
        self._append(parts[-1])
        return lines

    def _append(self, part: bytes) -> None:
        room = MAX_LINE - len(self.pending)
        if len(part) > room:
            self.dropped += len(part) - room
            part = part[:room]
        self.pending += part

    def flush(self) -> list[bytes]:
        return [self._take()] if self.pending or self.dropped else []

    def _take(self) -> bytes:
        line = bytes(self.pending)
        if self.dropped:
            line += CUT_MARKER.format(self.dropped).encode()
        self.pending.clear()
        self.dropped = 0
        return line


def _cut(line: bytes) -> bytes:
    return line[:MAX_LINE] + CUT_MARKER.format(len(line) - MAX_LINE).encode()


def mask_lines(mask: Masker, lines: list[bytes]) -> list[str]:
    """``lines`` (complete lines of one stream, without newlines) decoded and masked."""
    text = mask(b"\n".join(lines).decode("utf-8", "replace"))
    texts = text.split("\n")
    if _CUT_PREFIX in text:  # rare: only then look at each line's end
        texts = [_mask_cut(mask, line) if line.endswith("]") else line for line in texts]
    return texts


def _mask_cut(mask: Masker, text: str) -> str:
    """A cut line: mask the start of a secret left at the cut (its end was dropped)."""
    cut = _CUT_AT_END.search(text)
    if cut is None:
        return text
    return mask.mask_cut(text[: cut.start()]) + text[cut.start() :]

"""Masking of secret values in output lines: each occurrence, anywhere in a line, becomes ``***``.

A supervisor masks in every run's output the secrets of every job it knows (not only the run's
own: a script may print what it stole from another), plus the package index's credentials.
Output is masked line by line, so a multi-line secret (a PEM key) is masked line by line: each of
its lines is a secret of its own. A line cut at 64 KiB loses the end of a secret straddling the
cut; ``mask_cut`` masks the start of it that remains. Values shorter than MIN_SECRET_LENGTH are
refused as secrets where they are entered (admin form, import); here they are ignored.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import unquote, urlsplit

MASK = "***"
MIN_SECRET_LENGTH = 3  # shorter values would mask ordinary text ("1", "no"): refused as secrets


def short_secret_error(key: str, value: str) -> str | None:
    """The reason ``value`` cannot be the secret ``key`` (too short to mask), or None if it can."""
    if len(value.strip()) < MIN_SECRET_LENGTH:
        return (
            f"secret {key!r} is shorter than {MIN_SECRET_LENGTH} characters and could not be masked in logs: "
            "use a longer value, or do not mark it secret"
        )
    return None


def secret_pieces(values: Iterable[str]) -> set[str]:
    """The strings to mask for ``values``: each non-empty line of each value (stripped), >= 3 characters."""
    pieces = set()
    for value in values:
        for line in str(value or "").splitlines():
            line = line.strip()
            if len(line) >= MIN_SECRET_LENGTH:
                pieces.add(line)
    return pieces


def index_credentials(index: str) -> list[str]:
    """The secrets of a package index URL: its password and ``user:password`` (as written and decoded)."""
    if "://" not in index:
        return []
    try:
        parts = urlsplit(index)
    except ValueError:
        return []
    if parts.password is None:
        return []
    userinfo = parts.netloc.rpartition("@")[0]
    found = [parts.password, unquote(parts.password), userinfo, unquote(userinfo)]
    return [value for value in found if value]


def redact_url(url: str) -> str:
    """``url`` with the password of its userinfo replaced by ***, for messages and logs."""
    return re.sub(r"(://[^:/@\s]*:)[^@/\s]*@", r"\1***@", url)


class Masker:
    """Replaces every secret piece (see ``secret_pieces``) by ``***``. Immutable, thread-safe.

    Each piece is first looked for with ``in`` (C speed, ~1 GB/s per piece); only the pieces found
    go into the regular expression that replaces them (a regex alternation of every piece would
    scan at well under 1 MB/s with a few hundred secrets).
    """

    def __init__(self, values: Iterable[str] = ()):
        self.pieces = frozenset(secret_pieces(values))
        self._ordered = sorted(self.pieces, key=len, reverse=True)  # longest first: no partial masks

    def with_values(self, values: Iterable[str]) -> Masker:
        """This masker plus ``values`` (itself when they add nothing)."""
        extra = secret_pieces(values) - self.pieces
        return Masker(self.pieces | extra) if extra else self

    def __call__(self, text: str) -> str:
        present = [piece for piece in self._ordered if piece in text]
        if not present:
            return text
        return re.compile("|".join(map(re.escape, present))).sub(MASK, text)

    def mask_cut(self, kept: str) -> str:
        """Mask the end of ``kept`` (a line cut short) where it is the start of a secret."""
        tail = kept.rstrip("\ufffd")  # a character split by the cut decodes as U+FFFD
        for piece in self._ordered:
            for size in range(min(len(piece) - 1, len(tail)), 0, -1):
                if tail.endswith(piece[:size]):
                    return tail[:-size] + MASK
        return kept

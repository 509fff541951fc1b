"""Masking of secret values in output lines: each occurrence, anywhere in a line, becomes ``***``."""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "***"
MIN_SECRET_LENGTH = 3  # shorter values would mask ordinary text ("1", "no"); they are not masked


class Masker:
    """Replaces every secret value of at least MIN_SECRET_LENGTH characters by ``***``."""

    def __init__(self, values: Iterable[str]):
        secrets = sorted({v for v in values if v and len(v) >= MIN_SECRET_LENGTH}, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, secrets))) if secrets else None

    def __call__(self, text: str) -> str:
        return self._pattern.sub(MASK, text) if self._pattern else text

"""`UnicodeText`: a Gymnasium `Text` space that accepts any unicode string.

Why: `gymnasium.spaces.Text.contains` rejects any character outside a finite charset
(alphanumeric by default), and the env checker warns when an observation is outside
its space. Math prompts carry LaTeX, `$`, `×`, `£` and arbitrary unicode, so
membership here checks only the type and the length. Sampling still draws from a
finite charset (sampling needs one); the charset below adds what math text uses.
"""

from __future__ import annotations

import string
from typing import Any

from gymnasium.spaces import Text

__all__ = ["UnicodeText", "SAMPLE_CHARSET"]

SAMPLE_CHARSET = string.ascii_letters + string.digits + " +-*/=()[]{}^_.,$\\\n"


class UnicodeText(Text):
    r"""Any `str` whose length is in [min_length, max_length].

    Example:
        >>> space = UnicodeText(max_length=16)
        >>> space.contains("½ × $\\frac{1}{2}$")
        True
        >>> space.contains(b"bytes")
        False
    """

    def __init__(
        self, max_length: int, *, min_length: int = 0, seed: int | None = None
    ) -> None:
        super().__init__(max_length, min_length=min_length, charset=SAMPLE_CHARSET, seed=seed)

    def contains(self, x: Any) -> bool:
        """Type and length only: every unicode character is allowed."""
        return isinstance(x, str) and self.min_length <= len(x) <= self.max_length

    def __repr__(self) -> str:
        return f"UnicodeText({self.min_length}, {self.max_length})"

    def __eq__(self, other: Any) -> bool:
        return (
            isinstance(other, UnicodeText)
            and self.min_length == other.min_length
            and self.max_length == other.max_length
        )

"""Pure text functions on answers: extraction, numeric normalisation, leak detection.

Why separate from the verifier: these run in the caller's process (the verifier's
fast path, the prefix answer-leak guard, the loaders) and must be cheap and safe on
hostile text. Every function here is linear in the input length: no nested regex
quantifiers, braces matched in one pass.
"""

from __future__ import annotations

import re
from fractions import Fraction

__all__ = [
    "strip_calculator_annotations",
    "last_boxed",
    "extract_final_answer",
    "parse_number",
    "contains_answer",
    "clean_text",
    "strip_unit_words",
]

_ANNOTATION_RE = re.compile(r"<<[^<>\n]*>>")
_BOXED_RE = re.compile(r"\\(?:boxed|fbox)\s*")
_BRACE_RE = re.compile(r"[{}]")
_HASHES_RE = re.compile(r"####[ \t]*([^\n]*)")
# A number as written in prose: "-4", "1,000", "$5", "0.25". The look-behind keeps
# "9-4" from yielding "-4" and "x1" from yielding "1".
_NUMBER_RE = re.compile(r"(?<![\w.])-?\\?\$?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")
_FRAC_RE = re.compile(r"\\[dt]?frac\{\s*(-?\d+)\s*\}\{\s*(-?\d+)\s*\}")
_PLAIN_NUMBER_RE = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\d*\.\d+")
_SLASH_FRACTION_RE = re.compile(r"(-?\d+)/(\d+)")
_LATEX_FRAC_FULL_RE = re.compile(r"(-?)\\[dt]?frac\{(-?\d+)\}\{(\d+)\}")
_SPACING_RE = re.compile(r"\\[!,;: ]|\\left|\\right|\s+")
# One unit at the end of an answer: a word (after a space) or \text{...}-like words,
# optionally squared or cubed ("cm^2"). Anchored at the end; stripped right to left.
_TRAILING_UNIT_RE = re.compile(
    r"(?:(?:\s|\\[,;:! ]|~)+(?P<word>[A-Za-z]{2,})"
    r"|(?:\s|\\[,;:! ]|~)*\\(?:text|textrm|textnormal|textit|textbf|mathrm|mbox)\s*"
    r"\{(?P<text>[^{}\\]*)\})"
    r"(?:\^\{?[23]\}?)?\.?$"
)
# Two-letter words that are units; any other unit word must have three letters or more
# (so "5 xy" stays an expression for math-verify).
_SHORT_UNITS = frozenset(
    "cm mm km nm kg mg ml mL ft in yd mi lb oz hr am pm AM PM kW".split()
)
# Words that are mathematics, not units: "2 pi" is not 2.
_MATH_WORDS = frozenset(
    "pi sqrt ln log lg exp sin cos tan cot sec csc arcsin arccos arctan sinh cosh tanh "
    "mod inf infty infinity choose over cdot times div pm mp".split()
)


def strip_calculator_annotations(text: str) -> str:
    """Remove GSM8K calculator annotations such as `<<48/2=24>>` (they are not prose)."""
    return _ANNOTATION_RE.sub("", text)


def clean_text(text: object) -> str:
    """Coerce any input to a str that is safe to pickle, regex and print.

    NUL bytes are dropped and lone surrogates replaced, so hostile completions cannot
    break IPC or encoding downstream; non-str input becomes its `str()` (bytes are
    decoded as UTF-8 with replacement).
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    elif not isinstance(text, str):
        text = "" if text is None else str(text)
    if "\x00" in text:
        text = text.replace("\x00", "")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def _matching_braces(text: str) -> dict[int, int]:
    """Map each `{` position to its matching `}` position, in one pass."""
    stack: list[int] = []
    match: dict[int, int] = {}
    for m in _BRACE_RE.finditer(text):
        if m.group() == "{":
            stack.append(m.start())
        elif stack:
            match[stack.pop()] = m.start()
    return match


def last_boxed(text: str) -> str | None:
    r"""Content of the last well-formed `\boxed{...}` (or `\fbox{...}`), else None.

    Nested braces are honoured (`\boxed{\frac{1}{2}}` gives `\frac{1}{2}`); an
    unclosed last box falls back to the previous closed one.
    """
    starts = [m.end() for m in _BOXED_RE.finditer(text)]
    if not starts:
        return None
    match = _matching_braces(text)
    for start in reversed(starts):
        if start < len(text) and text[start] == "{" and start in match:
            return text[start + 1 : match[start]].strip()
    return None


def extract_final_answer(text: str) -> str | None:
    r"""The final answer of a completion or solution, as written, or None.

    Order: the last `\boxed{}`; else the GSM8K `#### X` line; else the last number
    in the text. This is the "boxed or last number" rule most math RL graders use;
    the verifier compares what this returns.
    """
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed or None
    hashes = _HASHES_RE.findall(text)
    if hashes and hashes[-1].strip():
        return hashes[-1].strip()
    last = None
    for match in _NUMBER_RE.finditer(text):
        last = match
    return None if last is None else last.group()


def parse_number(text: str) -> Fraction | None:
    r"""Exact value of a plain number written the usual ways, else None.

    Accepts "72", "-4", "1,000", "$5", "\$5", "0.25", "3/4", "\frac{3}{4}", with
    LaTeX spacing and a trailing full stop. Anything else (units, percent, symbols)
    returns None so that math-verify decides it.
    """
    s = _SPACING_RE.sub("", text)
    s = s.replace("{,}", "").rstrip(".")
    if s.startswith("-\\$") or s.startswith("-$"):
        s = "-" + s.lstrip("-").lstrip("\\").lstrip("$")
    else:
        s = s.removeprefix("\\$").removeprefix("$")
    if s.startswith("$") and s.endswith("$") and len(s) > 1:
        s = s[1:-1]
    if not s or len(s) > 100:
        return None
    if _PLAIN_NUMBER_RE.fullmatch(s):
        return Fraction(s.replace(",", ""))
    m = _SLASH_FRACTION_RE.fullmatch(s)
    if m and int(m.group(2)) != 0:
        return Fraction(int(m.group(1)), int(m.group(2)))
    m = _LATEX_FRAC_FULL_RE.fullmatch(s)
    if m and int(m.group(3)) != 0:
        value = Fraction(int(m.group(2)), int(m.group(3)))
        return -value if m.group(1) else value
    return None


def strip_unit_words(answer: str) -> str:
    r"""The number of "<number> <unit words>" ("18 dollars", "18\text{ dollars}"), else `answer`.

    Why: math-verify reads "18 dollars" as a product of symbols and scores it wrong
    against 18, although "The answer is 18 dollars." (last number) scores right. Only
    a plain number (`parse_number`) followed by words is stripped; words that are
    mathematics ("pi", "sqrt") and single letters ("5 x") are left for math-verify.
    Answers longer than 200 characters are returned as they are (bounds the work).
    """
    if len(answer) > 200:
        return answer
    head = answer.strip()
    stripped = False
    while head:
        m = _TRAILING_UNIT_RE.search(head)
        if m is None:
            break
        word = m.group("word")
        if word is not None:
            if word.lower() in _MATH_WORDS or (len(word) == 2 and word not in _SHORT_UNITS):
                break
        elif not any(ch.isalpha() for ch in m.group("text")):
            break
        head = head[: m.start()].rstrip()
        stripped = True
    if stripped and head and parse_number(head) is not None:
        return head
    return answer


def _squash(text: str) -> str:
    return _SPACING_RE.sub("", text).replace("$", "")


def contains_answer(text: str, answer: str) -> bool:
    r"""Whether `text` states `answer` (the prefix answer-leak guard).

    Deliberately over-cautious: a numeric answer leaks if any number in the text has
    the same value (so "72.0", "$72" and "\frac{144}{2}" leak 72); any other answer
    leaks if its whitespace-free form appears verbatim (so "\sqrt{2}" leaks through
    "\sqrt { 2 }"). A false positive only shortens a prefix; a
    false negative would hand the model its reward.
    """
    value = parse_number(answer)
    if value is None:
        squashed = _squash(answer)
        return bool(squashed) and squashed in _squash(text)
    for m in _NUMBER_RE.finditer(text):
        number = parse_number(m.group())
        if number is not None and number == value:
            return True
    for m in _FRAC_RE.finditer(text):
        if int(m.group(2)) != 0 and Fraction(int(m.group(1)), int(m.group(2))) == value:
            return True
    return False

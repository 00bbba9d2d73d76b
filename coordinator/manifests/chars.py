"""Look-alike characters that sneak into manifests copied from web pages.

Blogs, wikis, word processors and chat clients turn quotes into curly quotes,
hyphens into dashes and spaces into non-breaking spaces. To a parser these are
ordinary letters, so the result is either a syntax error far from the cause or,
worse, a document that parses into nonsense (a key named "\\xa0\\xa0image").
The loader names the character and its position instead; this module holds
the table and the helpers that turn an index into a line and column.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

_SPACE = "replace it with a plain space"
_HYPHEN = "replace it with a plain hyphen (-)"
_SINGLE = "replace it with a plain single quote (')"
_DOUBLE = 'replace it with a plain double quote (")'
_DELETE = "delete it"

LOOKALIKES: dict[str, tuple[str, str]] = {
    "\u00a0": ("non-breaking space", _SPACE),
    "\u2007": ("figure space", _SPACE),
    "\u2009": ("thin space", _SPACE),
    "\u202f": ("narrow no-break space", _SPACE),
    "\u3000": ("ideographic space", _SPACE),
    "\u2018": ("left single quotation mark", _SINGLE),
    "\u2019": ("right single quotation mark", _SINGLE),
    "\u201a": ("single low quotation mark", _SINGLE),
    "\u2032": ("prime", _SINGLE),
    "\u201c": ("left double quotation mark", _DOUBLE),
    "\u201d": ("right double quotation mark", _DOUBLE),
    "\u201e": ("double low quotation mark", _DOUBLE),
    "\u2033": ("double prime", _DOUBLE),
    "\u2010": ("Unicode hyphen", _HYPHEN),
    "\u2011": ("non-breaking hyphen", _HYPHEN),
    "\u2012": ("figure dash", _HYPHEN),
    "\u2013": ("en dash", _HYPHEN),
    "\u2014": ("em dash", _HYPHEN),
    "\u2015": ("horizontal bar", _HYPHEN),
    "\u2212": ("minus sign", _HYPHEN),
    "\u00ad": ("soft hyphen", _DELETE),
    "\u200b": ("zero-width space", _DELETE),
    "\u200c": ("zero-width non-joiner", _DELETE),
    "\u200d": ("zero-width joiner", _DELETE),
    "\u2060": ("word joiner", _DELETE),
    "\ufeff": ("zero-width no-break space (a byte order mark inside the file)", _DELETE),
}

_PATTERN = re.compile("[" + "".join(LOOKALIKES) + "]")


def describe(ch: str) -> str:
    """``non-breaking space (U+00A0) — replace it with a plain space``."""
    name, fix = LOOKALIKES[ch]
    return f"{name} (U+{ord(ch):04X}) — {fix}"


def find(text: str, start: int = 0, end: int | None = None) -> Iterator[int]:
    """Indexes of look-alike characters in ``text[start:end]``."""
    for m in _PATTERN.finditer(text, start, len(text) if end is None else end):
        yield m.start()


def first(text: str, start: int = 0, end: int | None = None) -> int | None:
    return next(find(text, start, end), None)


def line_col(text: str, index: int) -> tuple[int, int]:
    """1-based line and column (in characters) of ``text[index]``."""
    line = text.count("\n", 0, index) + 1
    column = index - (text.rfind("\n", 0, index) + 1) + 1
    return line, column


def line_span(text: str, index: int) -> tuple[int, int]:
    """Start and end index of the line holding ``text[index]``, newline excluded."""
    start = text.rfind("\n", 0, index) + 1
    end = text.find("\n", index)
    return start, len(text) if end < 0 else end

"""Printing text that users and vendors wrote, so that it shows as what it is.

A vendor's product name, a dataset's description or a DICOM manufacturer can carry
a newline (a forged line in a report or a terminal), an ANSI escape (a recoloured or
cleared terminal), a bidirectional override (text shown reordered) or Markdown that
turns into a table row, a heading or a link. The API server refuses control
characters in the fields it knows (``CONTROL_CHARACTERS_RE2`` in lightbox.api.common
is the RE2 twin of ``CONTROL_CHARACTERS`` below); whatever reaches a printer is
escaped here anyway, since objects may predate that rule and not every value comes
through the API server.
"""

from __future__ import annotations

import re

# C0 and C1 controls, Unicode line/paragraph separators, bidirectional controls.
CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_WHITESPACE_CONTROLS = re.compile("[\t\n\r\x0b\x0c\x85\u2028\u2029]+")
REPLACEMENT = "\ufffd"

# Characters that start or end inline Markdown (emphasis, code, links, raw HTML,
# entities, strikethrough, table cells) and the escape character itself. CommonMark
# lets any ASCII punctuation be backslash-escaped, which renders it literally.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<|~&])")
# What may go inside a code span unchanged: no backtick (it would end the span),
# no pipe (it would end a table cell), no control characters.
_CODE_SAFE = re.compile(r"[A-Za-z0-9@:/._+=,* -]+")


class Markdown(str):
    """Text already safe to place in Markdown (escaped, or built only from trusted parts)."""


def terminal(text: object) -> str:
    """One line for a terminal: control characters shown as escapes (``\\x1b``, ``\\n``, ``\\u202e``)."""

    def show(match: re.Match[str]) -> str:
        char = match.group(0)
        return repr(char)[1:-1] if ord(char) < 0x100 else f"\\u{ord(char):04x}"

    return CONTROL_CHARACTERS.sub(show, str(text))


def markdown(text: object) -> Markdown:
    """Inline Markdown that renders as the literal text, on one line.

    Line breaks and tabs become one space; other control characters become U+FFFD;
    Markdown punctuation is backslash-escaped.
    """
    if isinstance(text, Markdown):
        return text
    flat = _WHITESPACE_CONTROLS.sub(" ", str(text))
    flat = CONTROL_CHARACTERS.sub(REPLACEMENT, flat)
    return Markdown(_MARKDOWN_SPECIAL.sub(r"\\\1", flat))


def code(text: object) -> Markdown:
    """A code span when the text is plain enough to sit in one unchanged, else escaped text."""
    value = str(text)
    if _CODE_SAFE.fullmatch(value):
        return Markdown(f"`{value}`")
    return markdown(value)

"""Printing user- and vendor-written text: terminals see no control characters, Markdown no markup."""

from __future__ import annotations

import pytest

from lightbox import cli
from lightbox.text import CONTROL_CHARACTERS, Markdown, code, markdown, terminal

HOSTILE = [
    "\x1b[2J\x1b[31mFAILED",  # clear screen, recolour
    "\x1b]8;;https://evil.example\x07click\x1b]8;;\x07",  # OSC 8 hyperlink
    "ok\rPassed",  # carriage return overwrites the line
    "line\nforged line",
    "\x9b31mred",  # C1 CSI
    "\u202eevil\u202c",  # right-to-left override
    "a\u2028b\u2029c\x85d",
    "\x00\x07\x08\x7f",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_terminal_shows_control_characters_as_escapes(text):
    shown = terminal(text)
    assert CONTROL_CHARACTERS.search(shown) is None and "\n" not in shown
    assert shown.isprintable()


def test_terminal_spells_what_it_replaced():
    assert terminal("a\x1b[0mb\nc\u202ed") == "a\\x1b[0mb\\nc\\u202ed"
    assert terminal("Société (Zürich) | *x*") == "Société (Zürich) | *x*"


@pytest.mark.parametrize("text", HOSTILE)
def test_markdown_is_one_line_without_control_characters(text):
    shown = markdown(text)
    assert CONTROL_CHARACTERS.search(shown) is None and shown.isprintable()


def test_markdown_escapes_markup_and_leaves_words_alone():
    assert markdown("a | b") == "a \\| b"
    assert (
        markdown("<b>*x*</b> _y_ `z` [l](u) ~~s~~ &amp; \\")
        == "\\<b>\\*x\\*\\</b> \\_y\\_ \\`z\\` \\[l\\](u) \\~\\~s\\~\\~ \\&amp; \\\\"
    )
    assert markdown("Acme Imaging GmbH 1.2.0-rc.1 (01)0579") == "Acme Imaging GmbH 1.2.0-rc.1 (01)0579"
    assert markdown("a\n\n# b") == "a # b"
    assert markdown(Markdown("**ours**")) == "**ours**"


def test_code_spans_only_for_plain_text():
    assert code("registry.example/x@sha256:ab") == "`registry.example/x@sha256:ab`"
    assert code("0 3 * * 1") == "`0 3 * * 1`"
    assert code("a`b") == "a\\`b"  # a backtick would end the span early
    assert code("a|b") == "a\\|b"  # a pipe would end the table cell


def test_cli_names_an_unknown_command_without_passing_its_control_characters(capsys):
    assert cli.main(["\x1b[2J\u202eevil\nforged"]) == 2
    err = capsys.readouterr().err
    assert CONTROL_CHARACTERS.search(err.replace("\n", "")) is None
    assert "\\x1b[2J\\u202eevil\\nforged" in err

"""Showing untrusted text (span names, prompts, outputs, ids, comments) without running it.

Streamlit renders Markdown (images, links, colours, icons, LaTeX) wherever a label or caption
is drawn, and Plotly renders a subset of HTML in hover and axis text. Text from spans goes
through one of these before it reaches either; long text is shown with ``st.text``/``st.code``.
"""

from __future__ import annotations

import html
import re

# Every ASCII punctuation character may be backslash-escaped in CommonMark; escaping all of them
# turns images, links, emphasis, HTML, Streamlit's :colour[...] and :icon: directives and $maths$
# into plain characters.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#+\-.!|~$:&\"'=^@])")
# GitHub-flavoured Markdown also links bare URLs, www. names and e-mail addresses, escapes or
# not: a zero-width space in "://", "www." and after "@" stops that.
_AUTOLINK = re.compile(r"(?i)(?<=:)(?=//)|(?<=\bwww)(?=\\\.)|(?<=@)")
_ZWSP = "\u200b"


def md_escape(text: object, max_chars: int = 200) -> str:
    """Text made inert for a Markdown label: one line, at most ``max_chars``, punctuation escaped.

    >>> md_escape("![x](http://e/x.png)").replace("\\u200b", "~")
    '\\\\!\\\\[x\\\\]\\\\(http\\\\:~//e/x\\\\.png\\\\)'
    """
    flat = " ".join(str(text).split())
    if len(flat) > max_chars:
        flat = flat[: max_chars - 1] + "…"
    return _AUTOLINK.sub(_ZWSP, _MARKDOWN_SPECIAL.sub(r"\\\1", flat))


def plot_text(text: object, max_chars: int = 80) -> str:
    """Text made inert for Plotly hover and axis labels (HTML-escaped, one line, shortened)."""
    flat = " ".join(str(text).split())
    if len(flat) > max_chars:
        flat = flat[: max_chars - 1] + "…"
    return html.escape(flat, quote=True)

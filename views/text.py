"""Text from users, URLs and files, made safe to show: markdown escaping, code spans, clipping, and a
library error on the page. Every other views module says user data through these."""

from __future__ import annotations

import re
import string

import streamlit as st

_MD_SPECIAL = re.compile("([" + re.escape(string.punctuation) + "])")
MAX_SHOWN = 80  # characters of a URL value echoed in a notice


def escape(text: object) -> str:
    """Text from a user, a URL or a file, made inert in markdown: every ASCII punctuation mark is
    backslash-escaped (CommonMark), so no link, image, directive or emphasis can be injected."""
    return _MD_SPECIAL.sub(r"\\\1", str(text)).replace("\n", " ")


def code(text: object) -> str:
    """``text`` as an inline code span that no backtick inside it can close."""
    text = str(text).replace("\n", " ")
    fence = "`" * (max((len(m) for m in re.findall("`+", text)), default=0) + 1)
    return f"{fence} {text} {fence}"


def clip(text: str) -> str:
    """A value from a URL as a notice shows it: at most MAX_SHOWN characters."""
    return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN] + f"… ({len(text):,} characters)"


def show_error(prefix: str, e: Exception) -> None:
    """A library error on the page: its message is the user's data (paths, names), so it is escaped."""
    st.error(f"{prefix}: {escape(e)}" if prefix else escape(e))

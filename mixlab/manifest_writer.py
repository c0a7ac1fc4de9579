"""Writing a ``lab.toml``: TOML values and keys spelled safely, comments, and :class:`ManifestWriter`, which
builds a manifest line by line (with the comments a person reads) and writes it atomically."""

from __future__ import annotations

import math
import os
import re
import tempfile
import tomllib
from pathlib import Path

from pydantic import (
    ValidationError,
)

from mixlab.errors import ManifestError
from mixlab.lab import Lab
from mixlab.manifest import MANIFEST, Manifest, _describe


def toml_value(value) -> str:
    """A value as lab.toml writes it (strings, integers, finite floats, booleans, lists and inline tables),
    every character a string holds escaped where TOML (or a reader) would not take it literally: quotes,
    backslashes, newlines and every other control or invisible character. Raises ManifestError for what
    TOML cannot hold (NaN, infinities, unpaired surrogates from undecodable file names, other types)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ManifestError(f"cannot write {value!r} into lab.toml: TOML values here are finite numbers")
        return repr(value)  # the shortest text that reads back as the same float; TOML reads Python's form
    if isinstance(value, str):
        return '"' + "".join(_toml_char(ch, value) for ch in value) + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise ManifestError(f"cannot write a {type(value).__name__} ({value!r}) into lab.toml")


def _toml_char(ch: str, whole: str) -> str:
    if ch in '"\\':
        return "\\" + ch
    if ch.isprintable() or ch == " ":
        return ch
    code = ord(ch)
    if 0xD800 <= code <= 0xDFFF:  # an undecodable byte of a file name (surrogateescape): not text TOML can hold
        raise ManifestError(f"cannot write {ascii(whole)} into lab.toml: it is not valid Unicode; rename it")
    return f"\\u{code:04X}" if code <= 0xFFFF else f"\\U{code:08X}"


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else toml_value(str(key))


def comment_text(text: str) -> str:
    """``text`` made safe for a ``#`` comment: one line, every non-printable character (newlines, carriage
    returns, other controls, undecodable bytes) written as its escape, so nothing after it can become TOML."""
    return "".join(ch if ch.isprintable() or ch == " " else ch.encode("unicode_escape").decode("ascii") for ch in text)


class ManifestWriter:
    """The one writer of ``lab.toml`` (demo builds, ``lab init``, ``lab from-mergekit``): keys are
    mixlab's own names, every value goes through :func:`toml_value` and every comment through
    :func:`comment_text`, the text is parsed back and must equal what was meant, the manifest must
    validate, and the file is created atomically and only where nothing (not even a dangling link) is."""

    def __init__(self) -> None:
        self.data: dict = {}
        self._lines: list[str] = []
        self._table = self.data

    def comment(self, text: str) -> None:
        self._lines.append(f"# {comment_text(text)}")

    def blank(self) -> None:
        self._lines.append("")

    def set(self, key: str, value, comment: str | None = None) -> None:
        """``key = value`` in the current table (the top level, or the last :meth:`table` / :meth:`item`)."""
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key) or key in self._table:
            raise ManifestError(f"lab.toml writer: bad or repeated key {key!r} (a mixlab bug)")
        self._table[key] = value
        self._lines.append(f"{key} = {toml_value(value)}" + (f"  # {comment_text(comment)}" if comment else ""))

    def table(self, name: str, comment: str | None = None) -> None:
        """Start ``[name]``: what :meth:`set` writes next goes into it."""
        self._table = self.data.setdefault(name, {})
        self._lines.append(f"[{name}]" + (f"  # {comment_text(comment)}" if comment else ""))

    def item(self, name: str, comment: str | None = None) -> None:
        """Start a new ``[[name]]`` entry (experts, benchmarks, true_mixtures)."""
        self._table = {}
        self.data.setdefault(name, []).append(self._table)
        self._lines.append(f"[[{name}]]" + (f"  # {comment_text(comment)}" if comment else ""))

    def text(self) -> str:
        """The file's text, after checking that it parses back to exactly the values that were set."""
        text = "\n".join(self._lines) + "\n"
        try:
            parsed = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ManifestError(
                f"the lab.toml mixlab wrote does not parse ({e}); nothing was written (a mixlab bug)"
            ) from None
        if parsed != self.data:
            raise ManifestError("the lab.toml mixlab wrote reads back differently; nothing was written (a mixlab bug)")
        return text

    def write(self, root: Path) -> Path:
        """Validate the manifest against ``root`` (every path it names inside, existing), then create
        ``root/lab.toml`` atomically. Never replaces anything: an existing file, folder or link (dangling
        ones included, whose target would be created outside the lab) is an error."""
        root = Path(root).resolve()
        text = self.text()
        try:
            Lab(root, Manifest.model_validate(self.data))
        except ValidationError as e:
            errors = "; ".join(_describe(err) for err in e.errors())
            raise ManifestError(
                f"the lab.toml written for {root} does not validate, so it was not written: {errors}"
            ) from None
        target = root / MANIFEST
        if os.path.lexists(target):
            what = "is a link" if target.is_symlink() else "exists"
            raise ManifestError(f"{target} {what}; move it away first (mixlab never overwrites a lab manifest)")
        fd, tmp = tempfile.mkstemp(prefix=".lab.toml.", dir=root)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.chmod(tmp, 0o644)
            os.link(tmp, target)  # atomic, and fails if anything (a dangling link too) is already there
        except FileExistsError:
            raise ManifestError(
                f"{target} exists; move it away first (mixlab never overwrites a lab manifest)"
            ) from None
        except OSError as e:
            raise ManifestError(f"cannot write {target}: {e.strerror or e}") from None
        finally:
            os.unlink(tmp)
        return target

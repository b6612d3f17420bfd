"""Content-safety blocklists: exact terms and regular expressions, matched after Unicode normalisation.

Both the text and the terms are normalised with NFKC and case folding (``normalise``), so a full-width ``BAD`` and
``Bad`` match the term ``bad``. A term matches as a whole word (it is not found inside a longer word when its first
or last character is a letter, digit or ``_``). Regexes run on the normalised text, case-insensitively.

Matching is linear in the text's length: every item of a blocklist is compiled into one RE2 program (RE2 never
backtracks), and RE2 refuses the constructs that would need backtracking (backreferences, lookaround), which
``check_item`` reports when a blocklist is saved. See docs/content-safety.md.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

import re2

__all__ = (
    "ITEM_KINDS",
    "MAX_ITEM_LENGTH",
    "Blocklist",
    "BlocklistError",
    "BlocklistItem",
    "check_item",
    "normalise",
)

ITEM_KINDS: Final = ("term", "regex")
MAX_ITEM_LENGTH: Final = 1000
_MAX_PROGRAM_MEMORY: Final = 8 << 20  # RE2's own default: a blocklist whose program needs more is refused
_WORD: Final = r"[\pL\pN_]"
_NOT_WORD: Final = r"[^\pL\pN_]"


class BlocklistError(ValueError):
    """An item that cannot be matched (or a blocklist too large to compile); the message names it."""


def normalise(text: str) -> str:
    """The form both text and terms are compared in: NFKC, then case folding."""
    return unicodedata.normalize("NFKC", text).casefold()


@dataclass(frozen=True, slots=True)
class BlocklistItem:
    kind: str  # "term" or "regex"
    value: str


def _options() -> re2.Options:
    options = re2.Options()
    options.case_sensitive = False
    options.log_errors = False
    options.max_mem = _MAX_PROGRAM_MEMORY
    return options


def _term_pattern(term: str) -> str:
    text = normalise(term)
    pattern = str(re2.escape(text))
    if unicodedata.category(text[0])[0] in "LN" or text[0] == "_":
        pattern = f"(?:^|{_NOT_WORD}){pattern}"
    if unicodedata.category(text[-1])[0] in "LN" or text[-1] == "_":
        pattern = f"{pattern}(?:$|{_NOT_WORD})"
    return pattern


def _pattern(item: BlocklistItem) -> str:
    return _term_pattern(item.value) if item.kind == "term" else item.value


def check_item(kind: str, value: str) -> str | None:
    """What is wrong with a blocklist item, or None (the management plane's save-time check)."""
    if kind not in ITEM_KINDS:
        return f"kind must be one of {', '.join(ITEM_KINDS)}"
    if not value.strip():
        return "the value must not be blank"
    if len(value) > MAX_ITEM_LENGTH:
        return f"the value must be at most {MAX_ITEM_LENGTH} characters"
    if kind == "regex":
        try:
            compiled = re2.compile(value, _options())
        except re2.error as exc:
            return f"not a linear-time (RE2) regular expression: {_message(exc)}"
        if compiled.search(""):
            return "the regular expression matches the empty text, so it would block everything"
    elif not normalise(value).strip():
        return "the term is empty once normalised"
    return None


def _message(exc: Exception) -> str:
    detail = exc.args[0] if exc.args else str(exc)
    return detail.decode("utf-8", "replace") if isinstance(detail, bytes) else str(detail)


class Blocklist:
    """One named blocklist, compiled: ``match`` finds the first item present in a normalised text."""

    __slots__ = ("_compiled", "_items", "_program", "name")

    def __init__(self, name: str, items: Iterable[BlocklistItem]) -> None:
        self.name = name
        self._items = tuple(items)
        compiled = []
        for item in self._items:
            problem = check_item(item.kind, item.value)
            if problem is not None:
                raise BlocklistError(f"blocklist '{name}': item {item.value!r}: {problem}")
            compiled.append((item, re2.compile(_pattern(item), _options())))
        self._compiled = tuple(compiled)
        self._program: re2._Regexp | None = None
        if self._items:
            alternation = "|".join(f"(?:{_pattern(item)})" for item in self._items)
            try:
                self._program = re2.compile(alternation, _options())
            except re2.error as exc:
                raise BlocklistError(f"blocklist '{name}' is too large to compile: {_message(exc)}") from None

    def __len__(self) -> int:
        return len(self._items)

    def match(self, normalised: str) -> BlocklistItem | None:
        """The first item found in ``normalised`` (a ``normalise``-d text), or None. One linear pass when nothing
        matches; on a match the items are tried one by one to name it (the rare path)."""
        if self._program is None or self._program.search(normalised) is None:
            return None
        for item, program in self._compiled:
            if program.search(normalised) is not None:
                return item
        return self._items[0]  # pragma: no cover - the alternation matched, so one item does

"""The ``rawxml`` policy format: expressions written with raw quotes, ``<``, ``>`` and ``&``.

The APIM portal, docs and labs write ``condition="@(context.Request.MatchedParameters["deployment-id"] == "x")"``,
which is not well-formed XML. ``rawxml_source`` escapes those characters inside every ``@(...)`` / ``@{...}``
that opens an attribute value or an element's text (the extent found by balancing brackets, skipping C# string,
character and comment syntax), then the normal safe parser reads the result. The returned :class:`Source` maps
offsets of the converted text back to the text as written, so every error keeps its original line and column.
Outside expressions the document is ordinary XML (``&amp;`` still means ``&``).
"""

from __future__ import annotations

import re

from .errors import PolicyError
from .xml import Element, OffsetMap, Source, normalize_newlines, to_xml

__all__ = ("rawxml_source", "rawxml_to_xml", "to_rawxml", "xml_to_rawxml")

MSG_UNTERMINATED = "unterminated policy expression: no matching '{}' for '@{}'"

_ESCAPES_TEXT = {"<": "&lt;", ">": "&gt;", "&": "&amp;"}
# In attribute values quotes must be escaped too, and whitespace kept as written (no attribute normalisation).
_ESCAPES_ATTR = {**_ESCAPES_TEXT, '"': "&quot;", "'": "&apos;", "\n": "&#10;", "\t": "&#9;"}
_CLOSERS = {"(": ")", "{": "}"}
# Tokens of a well-formed document: comments, CDATA, processing instructions, tags (quoted values kept whole), text.
_TOKEN_RE = re.compile(
    r"""<!--.*?-->|<!\[CDATA\[.*?\]\]>|<\?.*?\?>|<[^>"']*(?:(?:"[^"]*"|'[^']*')[^>"']*)*>|[^<]+""", re.S
)
_VALUE_RE = re.compile(r"""(=\s*)(["'])(.*?)\2""", re.S)
_ENTITY_RE = re.compile(r"&(?:(lt|gt|amp|quot|apos)|#([0-9]+)|#x([0-9a-fA-F]+));")
_NAMED = {"lt": "<", "gt": ">", "amp": "&", "quot": '"', "apos": "'"}


class _Unterminated(Exception):
    pass


def _is_expression_at(text: str, i: int) -> int:
    """Offset of the ``@`` when an expression starts at ``i`` after optional blanks, else -1."""
    n = len(text)
    while i < n and text[i] in " \t\n":
        i += 1
    return i if text.startswith(("@(", "@{"), i) else -1


def _scan_code(s: str, i: int) -> int:
    """``s[i]`` opens a bracket; the offset after the bracket that closes it."""
    depth, n = 0, len(s)
    while i < n:
        c = s[i]
        if c in "([{":
            depth += 1
            i += 1
        elif c in ")]}":
            depth -= 1
            i += 1
            if depth == 0:
                return i
        elif c == '"' or (c in "@$" and s.startswith(('"', '@"', '$"'), i + 1)):
            i = _skip_string(s, i)
        elif c == "'":
            i = _skip_char(s, i)
        elif s.startswith("//", i):
            newline = s.find("\n", i)
            i = n if newline < 0 else newline
        elif s.startswith("/*", i):
            close = s.find("*/", i + 2)
            if close < 0:
                raise _Unterminated
            i = close + 2
        else:
            i += 1
    raise _Unterminated


def _skip_string(s: str, i: int) -> int:
    """A C# string literal (regular, verbatim ``@"``, interpolated ``$"``) starts at ``i``; the offset after it."""
    verbatim = interpolated = False
    while s[i] in "@$":
        verbatim |= s[i] == "@"
        interpolated |= s[i] == "$"
        i += 1
    i += 1  # the opening quote
    n = len(s)
    while i < n:
        c = s[i]
        if c == "\\" and not verbatim:
            i += 2
        elif c == '"':
            if verbatim and s.startswith('"', i + 1):
                i += 2
            else:
                return i + 1
        elif interpolated and c in "{}":
            if s.startswith(c, i + 1):
                i += 2
            elif c == "{":
                i = _scan_code(s, i)
            else:
                i += 1
        else:
            i += 1
    raise _Unterminated


def _skip_char(s: str, i: int) -> int:
    i += 1
    n = len(s)
    while i < n and s[i] != "'":
        i += 2 if s[i] == "\\" else 1
    return i + 1


class _Converter:
    def __init__(self, text: str) -> None:
        self.s = text
        self.out: list[str] = []
        self.size = 0  # length of the converted text so far
        self.edits = OffsetMap()  # one edit per escaped character

    def copy(self, start: int, end: int) -> None:
        if end > start:
            self.out.append(self.s[start:end])
            self.size += end - start

    def copy_escaped(self, start: int, end: int, escapes: dict[str, str]) -> None:
        s = self.s
        for i in range(start, end):
            c = s[i]
            replacement = escapes.get(c)
            if replacement is None:
                self.out.append(c)
                self.size += 1
                continue
            self.edits.add(self.size, i, len(replacement), 1)
            self.out.append(replacement)
            self.size += len(replacement)

    def expression(self, at: int, escapes: dict[str, str]) -> int:
        """Copy the expression whose ``@`` is at ``at``, escaped; return the offset after it."""
        try:
            end = _scan_code(self.s, at + 1)
        except _Unterminated:
            opener = self.s[at + 1]
            source = Source(self.s)
            raise PolicyError(MSG_UNTERMINATED.format(_CLOSERS[opener], opener), *source.position(at)) from None
        self.copy_escaped(at, end, escapes)
        return end

    def run(self) -> None:
        s, n, i = self.s, len(self.s), 0
        content_start = False
        while i < n:
            if s[i] != "<":
                if content_start and (at := _is_expression_at(s, i)) >= 0:
                    self.copy(i, at)
                    i = self.expression(at, _ESCAPES_TEXT)
                end = s.find("<", i)
                end = n if end < 0 else end
                self.copy(i, end)
                i, content_start = end, False
                continue
            for opener, closer in (("<!--", "-->"), ("<![CDATA[", "]]>"), ("<?", "?>"), ("<!", ">")):
                if s.startswith(opener, i):
                    end = s.find(closer, i + len(opener))
                    end = n if end < 0 else end + len(closer)
                    self.copy(i, end)
                    i = end
                    break
            else:
                i = self.tag(i)
                content_start = True

    def tag(self, i: int) -> int:
        """Copy a start or end tag beginning at ``i``; expressions in attribute values are escaped."""
        s, n = self.s, len(self.s)
        j = i + 1
        while j < n and s[j] not in " \t\n/>":
            j += 1
        self.copy(i, j)
        while j < n:
            c = s[j]
            if c == ">":
                self.copy(j, j + 1)
                return j + 1
            if c in "\"'":
                j = self._value(j)
                continue
            self.copy(j, j + 1)
            j += 1
        return n

    def _value(self, quote_at: int) -> int:
        """Copy a quoted attribute value; returns the offset after its closing quote."""
        s, quote = self.s, self.s[quote_at]
        self.copy(quote_at, quote_at + 1)
        i = quote_at + 1
        at = _is_expression_at(s, i)
        if at >= 0:
            self.copy(i, at)
            i = self.expression(at, _ESCAPES_ATTR)
        close = s.find(quote, i)
        close = len(s) - 1 if close < 0 else close
        self.copy(i, close + 1)
        return close + 1


def rawxml_source(text: str) -> Source:
    """Convert a ``rawxml`` document to well-formed XML; the Source maps positions back to ``text``."""
    original = normalize_newlines(text)
    converter = _Converter(original)
    converter.run()
    if not converter.edits:
        return Source(original)
    return Source("".join(converter.out), original, converter.edits)


def rawxml_to_xml(text: str) -> str:
    """The well-formed (``xml`` format) text of a ``rawxml`` document."""
    return rawxml_source(text).text


def _raw(value: str) -> bool:
    return value.lstrip().startswith(("@(", "@{"))


def to_rawxml(element: Element) -> str:
    """Serialise an element tree in the ``rawxml`` format: expressions unescaped, everything else as ``to_xml``."""
    return to_xml(element, raw=_raw)


def _unescape(text: str) -> str:
    def replace(match: re.Match[str]) -> str:
        name, decimal, hexadecimal = match.groups()
        if name:
            return _NAMED[name]
        return chr(int(decimal) if decimal else int(hexadecimal, 16))

    return _ENTITY_RE.sub(replace, text)


def xml_to_rawxml(text: str) -> str:
    """The ``rawxml`` form of a well-formed document, keeping its layout: expressions are unescaped in place."""

    def value(match: re.Match[str]) -> str:
        if not _raw(match.group(3)):
            return match.group(0)
        return match.group(1) + match.group(2) + _unescape(match.group(3)) + match.group(2)

    def token(match: re.Match[str]) -> str:
        piece = match.group(0)
        if piece.startswith("<"):
            return _VALUE_RE.sub(value, piece) if not piece.startswith(("<!", "<?")) else piece
        return _unescape(piece) if _raw(piece) else piece

    return _TOKEN_RE.sub(token, normalize_newlines(text))

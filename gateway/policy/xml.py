"""A light element tree with source positions, parsed safely with defusedxml.sax.

DTDs are refused outright (``forbid_dtd``), which also rules out entity expansion ("billion laughs") and
external entities; defusedxml additionally forbids entity declarations and external references.

Positions: every element knows where its start tag, each attribute value and its content begin, so an error found
later (a bad attribute value, an expression that does not compile) can point at the exact character. A
:class:`Source` turns offsets of the parsed text back into the line and column of the text the user wrote (for
``rawxml`` the two differ, see ``gateway.policy.rawxml``).
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any
from xml.sax import InputSource, SAXParseException
from xml.sax.handler import ContentHandler, ErrorHandler
from xml.sax.saxutils import escape

from defusedxml import DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden  # type: ignore[import-untyped]  # defusedxml ships no type hints
from defusedxml.sax import make_parser  # type: ignore[import-untyped]  # defusedxml ships no type hints

from .errors import PolicyError

__all__ = ("Element", "OffsetMap", "Source", "normalize_newlines", "parse_xml", "to_xml")

_ATTR_ENTITIES = {'"': "&quot;", "\n": "&#10;", "\r": "&#13;", "\t": "&#9;"}
_TAG_NAME_RE = re.compile(r"<[^\s/>]+")
_ATTR_RE = re.compile(r"\s+([^\s=/>]+)\s*=\s*(?:\"([^\"]*)\"|'([^']*)')")


def normalize_newlines(text: str) -> str:
    """``\\r\\n`` and lone ``\\r`` become ``\\n`` (as an XML parser does), so offsets and lines agree."""
    return text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text


class OffsetMap:
    """Maps offsets of an edited text back to the text before the edits; each edit replaced a range.

    A position inside a replacement maps to the start of what it replaced.
    """

    __slots__ = ("_new", "_new_len", "_old", "_old_len")

    def __init__(self) -> None:
        self._new: list[int] = []
        self._old: list[int] = []
        self._new_len: list[int] = []
        self._old_len: list[int] = []

    def add(self, new_start: int, old_start: int, new_len: int, old_len: int) -> None:
        """Record an edit; edits must be added in text order."""
        self._new.append(new_start)
        self._old.append(old_start)
        self._new_len.append(new_len)
        self._old_len.append(old_len)

    def __bool__(self) -> bool:
        return bool(self._new)

    def __call__(self, offset: int) -> int:
        k = bisect_right(self._new, offset) - 1
        if k < 0:
            return offset
        start, length = self._new[k], self._new_len[k]
        if offset < start + length:
            return self._old[k]
        return self._old[k] + self._old_len[k] + offset - start - length


class Source:
    """The text handed to the XML parser and the map from its offsets to the user's line and column.

    ``to_original`` maps an offset of ``text`` to an offset of ``original`` (identity for ``xml``).
    """

    __slots__ = ("_original_starts", "_starts", "original", "text", "to_original")

    def __init__(self, text: str, original: str | None = None, to_original: Callable[[int], int] | None = None):
        self.text = text
        self.original = text if original is None else original
        self.to_original = to_original
        self._starts = _line_starts(text)
        self._original_starts = self._starts if original is None else _line_starts(self.original)

    def offset(self, line: int, column: int) -> int:
        """Offset in ``text`` of a 1-based line and column reported by the parser."""
        line = min(max(line, 1), len(self._starts))
        return min(self._starts[line - 1] + max(column, 1) - 1, len(self.text))

    def edited(self, text: str, edits: Callable[[int], int]) -> Source:
        """A Source for ``text``, made from this source's text by ``edits``; positions still refer to ``original``."""
        inner = self.to_original
        return Source(text, self.original, edits if inner is None else lambda offset: inner(edits(offset)))

    def position(self, offset: int) -> tuple[int, int]:
        """1-based (line, column) in the user's text of ``offset`` in ``text``."""
        if self.to_original is not None:
            offset = self.to_original(offset)
        line = bisect_right(self._original_starts, offset)
        return line, offset - self._original_starts[line - 1] + 1

    def raw_offset(self, start: int, decoded: int) -> int:
        """Offset in ``text`` of character ``decoded`` of the value that begins at ``start`` (entities decoded)."""
        text = self.text
        i, k, end = start, 0, len(text)
        while k < decoded and i < end:
            if text.startswith("<![CDATA[", i):
                close = text.find("]]>", i + 9)
                close = end if close < 0 else close
                if decoded - k < close - (i + 9):
                    return i + 9 + decoded - k
                k += close - (i + 9)
                i = close + 3
            elif text.startswith("<!--", i) or text.startswith("<?", i):
                close = text.find("-->" if text[i + 1] == "!" else "?>", i)
                i = end if close < 0 else close + (3 if text[i + 1] == "!" else 2)
            elif text[i] == "&":
                semicolon = text.find(";", i)
                i = end if semicolon < 0 else semicolon + 1
                k += 1
            else:
                i += 1
                k += 1
        return i


def _line_starts(text: str) -> list[int]:
    starts = [0]
    index = text.find("\n")
    while index >= 0:
        starts.append(index + 1)
        index = text.find("\n", index + 1)
    return starts


@dataclass(slots=True, eq=False)
class Element:
    """One XML element: tag, attributes in document order, child elements, direct text, 1-based position.

    ``attr_offsets`` and ``content_offset`` are offsets in ``source.text`` of each attribute value and of the
    character after the start tag; they place errors found inside a value (see ``value_position``).
    """

    tag: str
    attrs: dict[str, str] = field(default_factory=dict)
    children: list[Element] = field(default_factory=list)
    text: str = ""
    line: int | None = None
    column: int | None = None
    source: Source | None = field(default=None, repr=False)
    attr_offsets: dict[str, int] = field(default_factory=dict, repr=False)
    content_offset: int | None = field(default=None, repr=False)

    def error(self, message: str) -> PolicyError:
        """A PolicyError positioned at this element."""
        return PolicyError(message, self.line, self.column)

    def value_position(self, attr: str | None, offset: int = 0) -> tuple[int | None, int | None]:
        """(line, column) of character ``offset`` of attribute ``attr`` (``None``: of the text content)."""
        start = self.content_offset if attr is None else self.attr_offsets.get(attr)
        if self.source is None or start is None:
            return self.line, self.column
        return self.source.position(self.source.raw_offset(start, offset))

    def value_error(self, attr: str | None, message: str, offset: int = 0) -> PolicyError:
        return PolicyError(message, *self.value_position(attr, offset))

    def copy(self) -> Element:
        return Element(
            self.tag,
            dict(self.attrs),
            [c.copy() for c in self.children],
            self.text,
            self.line,
            self.column,
            self.source,
            dict(self.attr_offsets),
            self.content_offset,
        )

    def iter(self) -> Iterator[Element]:
        """This element and all its descendants, depth first in document order."""
        yield self
        for child in self.children:
            yield from child.iter()


class _TreeBuilder(ContentHandler):
    def __init__(self, source: Source) -> None:
        super().__init__()
        self.source = source
        self.locator: Any = None
        self.stack: list[Element] = []
        self.texts: list[list[str]] = []
        self.root: Element | None = None

    def setDocumentLocator(self, locator: Any) -> None:
        self.locator = locator

    def parser_offset(self) -> int | None:
        if self.locator is None:
            return None
        line = self.locator.getLineNumber()
        column = self.locator.getColumnNumber()
        if line is None or column is None or line < 1 or column < 0:
            return None
        return self.source.offset(line, column + 1)

    def position(self) -> tuple[int | None, int | None]:
        offset = self.parser_offset()
        return (None, None) if offset is None else self.source.position(offset)

    def startElement(self, name: str, attrs: Any) -> None:
        offset = self.parser_offset()
        element = Element(name, {k: attrs[k] for k in attrs.getNames()}, [], "", source=self.source)
        if offset is not None:
            element.line, element.column = self.source.position(offset)
            self._scan_start_tag(element, offset)
        if self.stack:
            self.stack[-1].children.append(element)
        else:
            self.root = element
        self.stack.append(element)
        self.texts.append([])

    def _scan_start_tag(self, element: Element, offset: int) -> None:
        text = self.source.text
        match = _TAG_NAME_RE.match(text, offset)
        if match is None:  # pragma: no cover - the parser just read a start tag here
            return
        pos = match.end()
        while (attr := _ATTR_RE.match(text, pos)) is not None:
            element.attr_offsets[attr.group(1)] = attr.start(2) if attr.group(2) is not None else attr.start(3)
            pos = attr.end()
        close = text.find(">", pos)
        element.content_offset = close + 1 if close >= 0 else None

    def endElement(self, name: str) -> None:
        element = self.stack.pop()
        element.text = "".join(self.texts.pop())

    def characters(self, content: str) -> None:
        if self.texts:
            self.texts[-1].append(content)


def parse_xml(text: str, source: Source | None = None) -> Element:
    """Parse ``text`` into an Element tree; any XML problem raises PolicyError with line/column.

    ``source`` (built from ``text``) maps positions to another original text; by default positions are in ``text``.
    """
    if not isinstance(text, str):
        raise PolicyError("policy document must be a string")
    if not text.strip():
        raise PolicyError("policy document is empty", 1, 1)
    if source is None:
        text = normalize_newlines(text)
        source = Source(text)
    builder = _TreeBuilder(source)
    parser = make_parser()
    parser.setContentHandler(builder)
    parser.setErrorHandler(ErrorHandler())
    parser.forbid_dtd = True
    parser.forbid_entities = True
    parser.forbid_external = True
    input_source = InputSource()
    input_source.setByteStream(BytesIO(source.text.encode("utf-8")))
    try:
        parser.parse(input_source)
    except SAXParseException as exc:
        line, column = exc.getLineNumber(), exc.getColumnNumber()
        position = source.position(source.offset(line, column + 1)) if line and column is not None else (line, None)
        raise PolicyError(f"malformed XML: {exc.getMessage()}", *position) from None
    except DTDForbidden:
        raise PolicyError("DTDs (<!DOCTYPE ...>) are not allowed in policy documents", *builder.position()) from None
    except EntitiesForbidden as exc:
        raise PolicyError(f"entity declarations are not allowed (entity {exc.name!r})", *builder.position()) from None
    except ExternalReferenceForbidden:
        raise PolicyError("external references are not allowed in policy documents", *builder.position()) from None
    if builder.root is None:  # pragma: no cover - expat reports "no element found" first
        raise PolicyError("policy document has no root element")
    return builder.root


def to_xml(
    element: Element,
    indent: str = "    ",
    _level: int = 0,
    *,
    raw: Callable[[str], bool] | None = None,
) -> str:
    """Serialise an Element tree back to XML text (pretty-printed; text content escaped).

    ``raw(value)`` true means: write that attribute value or text unescaped (the ``rawxml`` export).
    """
    pad = indent * _level
    attrs = "".join(
        f' {name}="{value if raw is not None and raw(value) else escape(value, _ATTR_ENTITIES)}"'
        for name, value in element.attrs.items()
    )
    text = element.text.strip()
    if raw is None or not raw(text):
        text = escape(text)
    if not element.children and not text:
        return f"{pad}<{element.tag}{attrs} />"
    if not element.children:
        return f"{pad}<{element.tag}{attrs}>{text}</{element.tag}>"
    inner = "\n".join(to_xml(child, indent, _level + 1, raw=raw) for child in element.children)
    lead = f"\n{pad}{indent}{text}" if text else ""
    return f"{pad}<{element.tag}{attrs}>{lead}\n{inner}\n{pad}</{element.tag}>"

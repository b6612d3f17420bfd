"""A light element tree with source positions, parsed safely with defusedxml.sax.

DTDs are refused outright (``forbid_dtd``), which also rules out entity expansion ("billion laughs") and
external entities; defusedxml additionally forbids entity declarations and external references.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from io import BytesIO
from typing import Any
from xml.sax import InputSource, SAXParseException
from xml.sax.handler import ContentHandler, ErrorHandler
from xml.sax.saxutils import escape

from defusedxml import DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden  # type: ignore[import-untyped]
from defusedxml.sax import make_parser  # type: ignore[import-untyped]

from .errors import PolicyError

__all__ = ("Element", "parse_xml", "to_xml")

_ATTR_ENTITIES = {'"': "&quot;", "\n": "&#10;", "\r": "&#13;", "\t": "&#9;"}


@dataclass(slots=True, eq=False)
class Element:
    """One XML element: tag, attributes in document order, child elements, direct text, 1-based position."""

    tag: str
    attrs: dict[str, str] = field(default_factory=dict)
    children: list[Element] = field(default_factory=list)
    text: str = ""
    line: int | None = None
    column: int | None = None

    def error(self, message: str) -> PolicyError:
        """A PolicyError positioned at this element."""
        return PolicyError(message, self.line, self.column)

    def copy(self) -> Element:
        return Element(self.tag, dict(self.attrs), [c.copy() for c in self.children], self.text, self.line, self.column)


class _TreeBuilder(ContentHandler):
    def __init__(self) -> None:
        super().__init__()
        self.locator: Any = None
        self.stack: list[Element] = []
        self.texts: list[list[str]] = []
        self.root: Element | None = None

    def setDocumentLocator(self, locator: Any) -> None:
        self.locator = locator

    def position(self) -> tuple[int | None, int | None]:
        if self.locator is None:
            return None, None
        line = self.locator.getLineNumber()
        column = self.locator.getColumnNumber()
        return line, (column + 1 if column is not None and column >= 0 else None)

    def startElement(self, name: str, attrs: Any) -> None:
        line, column = self.position()
        element = Element(name, {k: attrs[k] for k in attrs.getNames()}, [], "", line, column)
        if self.stack:
            self.stack[-1].children.append(element)
        else:
            self.root = element
        self.stack.append(element)
        self.texts.append([])

    def endElement(self, name: str) -> None:
        element = self.stack.pop()
        element.text = "".join(self.texts.pop())

    def characters(self, content: str) -> None:
        if self.texts:
            self.texts[-1].append(content)


def parse_xml(text: str) -> Element:
    """Parse ``text`` into an Element tree; any XML problem raises PolicyError with line/column."""
    if not isinstance(text, str):
        raise PolicyError("policy document must be a string")
    if not text.strip():
        raise PolicyError("policy document is empty")
    builder = _TreeBuilder()
    parser = make_parser()
    parser.setContentHandler(builder)
    parser.setErrorHandler(ErrorHandler())
    parser.forbid_dtd = True
    parser.forbid_entities = True
    parser.forbid_external = True
    source = InputSource()
    source.setByteStream(BytesIO(text.encode("utf-8")))
    try:
        parser.parse(source)
    except SAXParseException as exc:
        column = exc.getColumnNumber()
        raise PolicyError(
            f"malformed XML: {exc.getMessage()}", exc.getLineNumber(), column + 1 if column is not None else None
        ) from None
    except DTDForbidden:
        raise PolicyError("DTDs (<!DOCTYPE ...>) are not allowed in policy documents", *builder.position()) from None
    except EntitiesForbidden as exc:
        raise PolicyError(f"entity declarations are not allowed (entity {exc.name!r})", *builder.position()) from None
    except ExternalReferenceForbidden:
        raise PolicyError("external references are not allowed in policy documents", *builder.position()) from None
    if builder.root is None:  # pragma: no cover - expat reports "no element found" first
        raise PolicyError("policy document has no root element")
    return builder.root


def to_xml(element: Element, indent: str = "    ", _level: int = 0) -> str:
    """Serialise an Element tree back to XML text (pretty-printed; text content escaped)."""
    pad = indent * _level
    attrs = "".join(f' {name}="{escape(value, _ATTR_ENTITIES)}"' for name, value in element.attrs.items())
    text = element.text.strip()
    if not element.children and not text:
        return f"{pad}<{element.tag}{attrs} />"
    if not element.children:
        return f"{pad}<{element.tag}{attrs}>{escape(text)}</{element.tag}>"
    inner = "\n".join(to_xml(child, indent, _level + 1) for child in element.children)
    lead = f"\n{pad}{indent}{escape(text)}" if text else ""
    return f"{pad}<{element.tag}{attrs}>{lead}\n{inner}\n{pad}</{element.tag}>"

"""Backends named by `<set-backend-service backend-id="…"/>` in a policy document."""

from xml.sax import SAXException
from xml.sax.handler import ContentHandler

import defusedxml.sax
from defusedxml import DefusedXmlException

from named_values.references import Reference

__all__ = ("backend_references",)


class _BackendIdHandler(ContentHandler):
    def __init__(self):
        super().__init__()
        self.locator = None
        self.references: list[Reference] = []

    def setDocumentLocator(self, locator):
        self.locator = locator

    def startElement(self, name, attrs):
        backend_id = attrs.get("backend-id") if name == "set-backend-service" else None
        # Expressions (@(...)) and named-value references are resolved by the gateway at run time.
        if backend_id and not backend_id.startswith("@") and "{{" not in backend_id:
            line = self.locator.getLineNumber() if self.locator else 0
            column = self.locator.getColumnNumber() + 1 if self.locator else 0
            self.references.append(Reference(backend_id, line, column))


def backend_references(text: str) -> list[Reference]:
    """Literal backend ids of a (well-formed) document; an unparsable document has none."""
    handler = _BackendIdHandler()
    try:
        defusedxml.sax.parseString((text or "").encode(), handler, forbid_dtd=True)
    except (SAXException, DefusedXmlException, ValueError):
        return []
    return handler.references

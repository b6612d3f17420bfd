"""Backends named by `<set-backend-service backend-id="…"/>` in a policy document (also inside `<choose>`)."""

from gateway.contract import Element, PolicyError, is_expression, parse_xml
from named_values.references import Reference

__all__ = ("backend_references", "backend_references_in")


def backend_references_in(root: Element) -> list[Reference]:
    """Literal backend ids in a parsed document tree, with the position of their element."""
    references = []
    for el in root.iter():
        backend_id = el.attrs.get("backend-id") if el.tag == "set-backend-service" else None
        # Expressions (@(...)) and named-value references are resolved by the gateway at run time.
        if backend_id and not is_expression(backend_id) and "{{" not in backend_id:
            references.append(Reference(backend_id, el.line or 0, el.column or 0))
    return references


def backend_references(text: str) -> list[Reference]:
    """Literal backend ids of a stored (well-formed) document; an unparsable document has none."""
    try:
        return backend_references_in(parse_xml(text or ""))
    except PolicyError:
        return []

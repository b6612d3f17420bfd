"""`{{name}}` references to named values inside policy documents and backend credentials."""

import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ("REFERENCE_RE", "Reference", "find_references", "referenced_names")

# Same syntax as the gateway's substitution: the name between double braces, no spaces.
REFERENCE_RE = re.compile(r"\{\{([A-Za-z0-9\-._]+)\}\}")


@dataclass(frozen=True)
class Reference:
    """One `{{name}}` occurrence; line and column are 1-based."""

    name: str
    line: int
    column: int


def find_references(text: str) -> list[Reference]:
    found = []
    for match in REFERENCE_RE.finditer(text or ""):
        line = text.count("\n", 0, match.start()) + 1
        column = match.start() - (text.rfind("\n", 0, match.start()) + 1) + 1
        found.append(Reference(match.group(1), line, column))
    return found


def referenced_names(texts: Iterable[str]) -> set[str]:
    return {match.group(1) for text in texts for match in REFERENCE_RE.finditer(text or "")}

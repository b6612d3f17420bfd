"""Request routing: longest API path (segment-wise), then the operation template.

Within an API: an exact template beats a parameterised one (``{name}`` segments, most literal segments
first), which beats a ``/*`` wildcard (longest prefix first; the wildcard matches the rest, including
nothing). There is no fallback to a shorter API path when no operation of the longest one matches.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import unquote

from gateway.model import ApiEntry, OperationEntry

__all__ = ("RouteMatch", "Router", "RoutingError", "parse_template")

_EMPTY: Mapping[str, str] = {}
_PARAM = re.compile(r"\{([^{}/]+)\}")


class RoutingError(ValueError):
    """An API path or URL template cannot be compiled (raised at snapshot load)."""


@dataclass(slots=True)
class RouteMatch:
    api: ApiEntry
    operation: OperationEntry
    params: Mapping[str, str]
    forward_path: str  # the raw request path after the API path ("" or starting with "/")


# A template segment: a literal string, a parameter name (whole segment), or a compiled pattern.
@dataclass(frozen=True, slots=True)
class _Param:
    name: str


@dataclass(frozen=True, slots=True)
class _Pattern:
    regex: re.Pattern[str]


_Segment = str | _Param | _Pattern


def parse_template(template: str) -> tuple[tuple[_Segment, ...], bool]:
    """Split an operation URL template into segments; returns (segments, is_wildcard)."""
    path = template.split("?", 1)[0]
    if not path.startswith("/"):
        path = "/" + path
    wildcard = path == "/*" or path.endswith("/*")
    if wildcard:
        path = path[:-2]
        raw_segments = path[1:].split("/") if path else []
    else:
        raw_segments = path[1:].split("/")
    segments: list[_Segment] = []
    for raw in raw_segments:
        if "*" in raw:
            raise RoutingError(f"URL template {template!r}: '*' is only allowed as the last segment '/*'")
        whole = _PARAM.fullmatch(raw)
        if whole:
            segments.append(_Param(whole.group(1)))
        elif _PARAM.search(raw):
            pattern, last = [], 0
            for m in _PARAM.finditer(raw):
                pattern.append(re.escape(raw[last : m.start()]))
                pattern.append(f"(?P<{_group(m.group(1))}>[^/]+?)")
                last = m.end()
            pattern.append(re.escape(raw[last:]))
            segments.append(_Pattern(re.compile("".join(pattern))))
        elif "{" in raw or "}" in raw:
            raise RoutingError(f"URL template {template!r}: unbalanced braces in segment {raw!r}")
        else:
            segments.append(raw)
    return tuple(segments), wildcard


def _group(name: str) -> str:
    # regex group names must be identifiers; encode anything else reversibly
    return "p_" + name.encode().hex()


def _ungroup(group: str) -> str:
    return bytes.fromhex(group[2:]).decode()


def _decode(value: str) -> str:
    return unquote(value) if "%" in value else value


class _OperationTable:
    """The operations of one API, indexed by method."""

    __slots__ = ("exact", "templated", "wildcard")

    def __init__(self, api: ApiEntry) -> None:
        self.exact: dict[str, dict[str, OperationEntry]] = {}
        templated: dict[str, list[tuple[int, int, tuple[_Segment, ...], OperationEntry]]] = {}
        wildcard: dict[str, list[tuple[int, int, tuple[_Segment, ...], OperationEntry]]] = {}
        for index, op in enumerate(api.operations):
            segments, is_wild = parse_template(op.url_template)
            literal_count = sum(isinstance(s, str) for s in segments)
            if is_wild:
                wildcard.setdefault(op.method, []).append((-len(segments), -literal_count, segments, op))
            elif literal_count == len(segments):
                key = "/" + "/".join(segments)  # type: ignore[arg-type]  # literal_count == len(segments): every segment is a str here
                by_path = self.exact.setdefault(op.method, {})
                if key in by_path:
                    raise RoutingError(f"API {api.name!r}: two {op.method} operations with URL template {key!r}")
                by_path[key] = op
            else:
                templated.setdefault(op.method, []).append((-literal_count, index, segments, op))
        self.templated = {
            m: tuple((s, op) for *_, s, op in sorted(v, key=lambda t: t[:2])) for m, v in templated.items()
        }
        self.wildcard = {m: tuple((s, op) for *_, s, op in sorted(v, key=lambda t: t[:2])) for m, v in wildcard.items()}

    def match(self, method: str, op_path: str) -> tuple[OperationEntry, Mapping[str, str]] | None:
        by_path = self.exact.get(method)
        if by_path is not None:
            op = by_path.get(op_path)
            if op is not None:
                return op, _EMPTY
        templated = self.templated.get(method)
        wildcard = self.wildcard.get(method)
        if templated is None and wildcard is None:
            return None
        parts = op_path[1:].split("/")
        if templated is not None:
            for segments, op in templated:
                params = _match_segments(segments, parts, exact_length=True)
                if params is not None:
                    return op, params
        if wildcard is not None:
            for segments, op in wildcard:
                params = _match_segments(segments, parts, exact_length=False)
                if params is not None:
                    return op, params
        return None


def _match_segments(segments: tuple[_Segment, ...], parts: list[str], exact_length: bool) -> dict[str, str] | None:
    if len(parts) < len(segments) or (exact_length and len(parts) != len(segments)):
        return None
    params: dict[str, str] = {}
    for segment, part in zip(segments, parts, strict=False):
        if isinstance(segment, str):
            if segment != part:
                return None
        elif isinstance(segment, _Param):
            if not part:
                return None
            params[segment.name] = _decode(part)
        else:
            m = segment.regex.fullmatch(part)
            if m is None:
                return None
            for group, value in m.groupdict().items():
                params[_ungroup(group)] = _decode(value)
    return params


class _Node:
    __slots__ = ("api", "children", "table")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.api: ApiEntry | None = None
        self.table: _OperationTable | None = None


class Router:
    """Maps (method, raw path) to an API operation; built once per snapshot.

    The paths of the exact operations (no parameter, no wildcard) are a finite set known here: their matches are
    made once, and a request to one of them (most are) finds it with two dictionary lookups.
    """

    __slots__ = ("_exact", "_root")

    def __init__(self, apis: Iterable[ApiEntry]) -> None:
        self._root = _Node()
        self._exact: dict[str, dict[str, RouteMatch]] = {}
        tables: list[tuple[str, _OperationTable]] = []
        for api in apis:
            node = self._root
            if api.path:
                for segment in api.path.split("/"):
                    if not segment:
                        raise RoutingError(f"API {api.name!r}: empty segment in path {api.path!r}")
                    node = node.children.setdefault(segment, _Node())
            if node.api is not None:
                raise RoutingError(f"APIs {node.api.name!r} and {api.name!r} share the path {api.path!r}")
            node.api = api
            node.table = _OperationTable(api)
            tables.append(("/" + api.path if api.path else "", node.table))
        for base, table in tables:
            for method, by_path in table.exact.items():
                for op_path in by_path:
                    # "/{api}" routes as "/{api}/"; an API with a longer path may take either: the tree decides
                    for path in (base + op_path, base) if op_path == "/" and base else (base + op_path,):
                        found = self._search(method, path)
                        if found is not None and found.params is _EMPTY:  # an exact operation, maybe another's
                            self._exact.setdefault(path, {})[method] = found

    def match(self, method: str, path: str) -> RouteMatch | None:
        """The operation for ``method`` and the raw ``path``, None when none matches. The match of an exact
        operation is shared by its requests: never changed by its users."""
        by_method = self._exact.get(path)
        if by_method is not None:
            found = by_method.get(method)
            if found is not None:
                return found
        return self._search(method, path)

    def _search(self, method: str, path: str) -> RouteMatch | None:
        if not path.startswith("/"):
            return None
        node = self._root
        best, best_offset = node, 0
        offset = 1
        for segment in path[1:].split("/"):
            child = node.children.get(segment)
            if child is None:
                break
            node = child
            offset += len(segment) + 1
            if node.table is not None:
                best, best_offset = node, offset - 1
        table, api = best.table, best.api
        if table is None or api is None:
            return None
        forward_path = path[best_offset:]
        found = table.match(method, forward_path or "/")
        if found is None:
            return None
        return RouteMatch(api, found[0], found[1], forward_path)

"""The policy registry: element name to policy class, built from an explicit list of classes.

The gateway's registry is built from ``gateway.policy.builtin.BUILTINS``; the package ``gateway.policy`` installs it
when it is imported, and documents compile against it unless the caller passes another registry. How to add a
policy: docs/adding-a-policy.md.
"""

from __future__ import annotations

from collections.abc import Iterable

from .base import Policy

__all__ = ("Registry", "get_policy_class", "install", "installed", "policy_names")


class Registry:
    """The policy classes by element name. Each class declares its one name (an APIM alias is a subclass)."""

    __slots__ = ("_classes",)

    def __init__(self, classes: Iterable[type[Policy]]) -> None:
        by_name: dict[str, type[Policy]] = {}
        for cls in classes:
            name = cls.name
            if not name:
                raise TypeError(f"{cls.__name__} has no policy name")
            if not cls.sections:
                raise TypeError(f"policy {name!r} declares no sections")
            if not cls.scopes:
                raise TypeError(f"policy {name!r} declares no scopes")
            if name in by_name:
                raise ValueError(f"policy {name!r} is registered twice: by {by_name[name].__name__} and {cls.__name__}")
            by_name[name] = cls
        self._classes = by_name

    def get(self, name: str) -> type[Policy] | None:
        """The class of element ``name``, None when none is registered."""
        return self._classes.get(name)

    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self._classes))

    def classes(self) -> tuple[type[Policy], ...]:
        return tuple(self._classes.values())


_installed: Registry | None = None


def install(registry: Registry) -> None:
    """Make ``registry`` the one documents compile against by default (done once, by ``gateway.policy``)."""
    global _installed
    _installed = registry


def installed() -> Registry:
    if _installed is None:  # pragma: no cover - importing any gateway.policy module runs the package's install
        raise RuntimeError("no policy registry is installed: import gateway.policy")
    return _installed


def get_policy_class(name: str) -> type[Policy]:
    """The installed registry's class of ``name``; LookupError when there is none."""
    cls = installed().get(name)
    if cls is None:
        raise LookupError(f"unknown policy {name!r}")
    return cls


def policy_names() -> tuple[str, ...]:
    return installed().names()

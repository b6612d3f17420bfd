"""Write-time configuration safety (docs/configuration-safety.md): a change is committed only if the snapshot that
results from it loads in the gateway's own loader.

`validated_write()` wraps a write. Inside the write's transaction it builds the snapshot (`build_snapshot`) and runs
the gateway's loader on it (`gateway.snapshot.check_snapshot`, the very code a gateway runs). Only problems that
did not exist before the write block it: a database that already holds a bad row (changed by hand, or loaded by an
older version) can still be repaired. A blocked write raises `ConfigRejected` and its savepoint is rolled back, so
nothing is saved. Each write path turns that into its own answer: REST 400 (409 for a DELETE), the admin an error
message, management commands a `CommandError`.

The problems of the committed revision are remembered (per process, on commit) so that a write usually builds and
loads one snapshot, not two.
"""

import re
import secrets
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from django.db import transaction
from django.db.models.signals import post_migrate
from django.dispatch import receiver

from gateway.contract import Problem, check_snapshot

from .models import ConfigRevision
from .snapshot import build_snapshot

__all__ = ("ConfigRejected", "current_problems", "field_errors", "validated_write")

# The check encrypts secrets and decrypts them again in this process: any token will do, so a random one is used.
CHECK_TOKEN = secrets.token_urlsafe(32)
MSG_BREAKS = "This change would make the gateway configuration invalid: {message}"

# Words of the loader's messages that name a field of the item ("backend 'b' url: ...").
_FIELD_WORDS = {
    "url": "url",
    "service_url": "service_url",
    "policy": "policy",
    "credential header": "credentials_header",
    "credentials_header": "credentials_header",
    "credential query": "credentials_query",
    "credentials_query": "credentials_query",
    "subscription_key_header": "subscription_key_header",
    "scope": "scope",
    "path": "path",
}

_INDEX_RE = re.compile(r"\[\d+\]")

_local = threading.local()
_known: dict[int, frozenset[Problem]] = {}  # revision -> its problems (only the latest committed one is kept)


class WriteGuard:
    """Yielded by `validated_write`: set ``skip`` when the write was refused by other means (nothing to check)."""

    skip = False


class ConfigRejected(Exception):
    """The write would give gateways a snapshot they cannot load; ``problems`` are the new loader errors."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.kind, p.name, p.message))
        super().__init__("; ".join(p.message for p in self.problems))


def current_problems() -> frozenset[Problem]:
    """Every problem the gateway's loader finds in the snapshot as the current transaction sees it."""
    return frozenset(check_snapshot(build_snapshot(CHECK_TOKEN), gateway_token=CHECK_TOKEN))


@contextmanager
def validated_write() -> Iterator["WriteGuard"]:
    """Run a write; raise ConfigRejected (and roll it back) when it adds a problem to the snapshot.

    Nested uses check too (a service turns the error into its own field names), against the problems that existed
    before the outermost write began; the outer one then skips a check already made at the same revision.
    """
    outermost = not getattr(_local, "depth", 0)
    _local.depth = getattr(_local, "depth", 0) + 1
    try:
        with transaction.atomic():
            revision = ConfigRevision.current()
            if outermost:
                _local.checked = None
                before = _known.get(revision)
                _local.before = before if before is not None else current_problems()
            guard = WriteGuard()
            yield guard
            if guard.skip or transaction.get_connection().needs_rollback:
                return  # the write failed or was refused: it is rolled back, there is nothing to check
            changed = ConfigRevision.current()
            if changed == revision or changed == _local.checked:
                return  # nothing in the configuration changed, or the change was checked already
            after = current_problems()
            known = {_identity(p) for p in _local.before}
            new = {p for p in after if _identity(p) not in known}
            if new:
                raise ConfigRejected(new)
            _local.checked = changed
            if outermost:
                transaction.on_commit(lambda: _remember(changed, after))
    finally:
        _local.depth -= 1


def _identity(problem: Problem) -> tuple[str, str, str]:
    # an item without a usable name is located by its index, which another write may shift
    return problem.kind, problem.name, _INDEX_RE.sub("[]", problem.message)


def _remember(revision: int, problems: frozenset[Problem]) -> None:
    _known.clear()
    _known[revision] = problems


@receiver(post_migrate, dispatch_uid="sluice_forget_known_problems")
def _forget(**kwargs) -> None:
    # a migrated or flushed database starts its revisions again: what was remembered no longer applies
    _known.clear()


def field_errors(
    exc: ConfigRejected, *, kind: str | None = None, name: str | None = None, fallback: str = "detail"
) -> dict[str, list[str]]:
    """The problems as DRF-style field errors. A problem of the item being written (``kind``, ``name``) goes under the
    field its message names; a problem of another item (a reference this write broke) under ``fallback``."""
    errors: dict[str, list[str]] = {}
    for problem in exc.problems:
        field = _field_of(problem) if (problem.kind, problem.name) == (kind, name) else None
        errors.setdefault(field or fallback, []).append(MSG_BREAKS.format(message=problem.message))
    return errors


def _field_of(problem: Problem) -> str | None:
    quoted = f"'{problem.name}'"
    _, found, rest = problem.message.partition(quoted)
    if not found:
        return None
    rest = rest.lstrip(" :")
    for word, field in _FIELD_WORDS.items():
        if rest.startswith(word):
            return field
    return None

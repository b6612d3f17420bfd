"""Settings for `make run` on one machine: the embedded default (SQLite, no Redis needed)."""

from .base import *  # noqa: F403
from .base import SECRET_KEY, env

DEBUG = env.bool("DJANGO_DEBUG", False)
if not SECRET_KEY:
    raise RuntimeError("DJANGO_SECRET_KEY is not set: run `make run` once, or export it (see README).")

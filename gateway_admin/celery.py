"""Celery application for the management plane.

With ``REDIS_URL`` set, Redis is the broker; on the embedded default tasks run eagerly in-process.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_admin.settings.local")

app = Celery("gateway_admin")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

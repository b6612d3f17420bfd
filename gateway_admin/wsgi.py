"""WSGI entry point (gunicorn gateway_admin.wsgi)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_admin.settings.local")
application = get_wsgi_application()

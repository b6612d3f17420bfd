"""Create the built-in all-access subscription `master` (scope /apis, active) with random keys.

The keys are encrypted with the SLUICE_SECRET_KEYS configured at migrate time; the code is inlined (not imported from
named_values.crypto / gateway.secrets) so this migration keeps working when those modules change.
"""

import hashlib
import secrets

from cryptography.fernet import Fernet, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import migrations

MASTER = "master"


def create_master_subscription(apps, schema_editor):
    Subscription = apps.get_model("subscriptions", "Subscription")
    if Subscription.objects.filter(name=MASTER).exists():
        return
    keys = [key.strip() for key in settings.SLUICE.get("SECRET_KEYS") or () if key.strip()]
    if not keys:
        raise ImproperlyConfigured(
            "Cannot create the built-in 'master' subscription: SLUICE_SECRET_KEYS is not set, so its keys cannot be "
            "encrypted at rest. Set SLUICE_SECRET_KEYS (a Fernet key: "
            '`python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"`) '
            "and run migrate again."
        )
    fernet = MultiFernet([Fernet(key) for key in keys])
    primary, secondary = secrets.token_hex(32), secrets.token_hex(32)
    Subscription.objects.create(
        name=MASTER,
        display_name="Built-in all-access subscription",
        state="active",
        encrypted_primary_key=fernet.encrypt(primary.encode()).decode(),
        encrypted_secondary_key=fernet.encrypt(secondary.encode()).decode(),
        primary_key_hash=hashlib.sha256(primary.encode()).hexdigest(),
        secondary_key_hash=hashlib.sha256(secondary.encode()).hexdigest(),
    )


def delete_master_subscription(apps, schema_editor):
    apps.get_model("subscriptions", "Subscription").objects.filter(name=MASTER).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("subscriptions", "0001_initial"),
    ]

    operations = [
        migrations.RunPython(create_master_subscription, delete_master_subscription),
    ]

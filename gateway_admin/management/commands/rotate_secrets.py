"""`manage.py rotate_secrets`: re-encrypt every secret at rest with the first SLUICE_SECRET_KEYS key."""

from django.core.management.base import BaseCommand, CommandError

from gateway_admin.safety import ConfigRejected, validated_write
from named_values import crypto
from named_values.models import NamedValue
from subscriptions.models import Subscription


class Command(BaseCommand):
    help = (
        "Re-encrypt secret named values and subscription keys with the first key of SLUICE_SECRET_KEYS. "
        "Rotation: prepend a new key, run this command, then remove the old key."
    )

    def handle(self, *args, **options):
        try:
            with validated_write():
                named_values = list(NamedValue.objects.select_for_update().filter(secret=True))
                for named_value in named_values:
                    named_value.encrypted_value = crypto.rotate(named_value.encrypted_value)
                # bulk_update sends no signals: the plaintext is unchanged, so the configuration revision is too.
                NamedValue.objects.bulk_update(named_values, ["encrypted_value"])
                subscriptions = list(Subscription.objects.select_for_update())
                for subscription in subscriptions:
                    subscription.encrypted_primary_key = crypto.rotate(subscription.encrypted_primary_key)
                    subscription.encrypted_secondary_key = crypto.rotate(subscription.encrypted_secondary_key)
                Subscription.objects.bulk_update(subscriptions, ["encrypted_primary_key", "encrypted_secondary_key"])
        except crypto.SecretDecryptionError as exc:
            raise CommandError(f"{exc} Nothing was changed.") from exc
        except ConfigRejected as exc:
            raise CommandError(f"{exc} Nothing was changed.") from exc
        self.stdout.write(
            f"Re-encrypted {len(named_values)} secret named value(s) and {len(subscriptions)} subscription(s) "
            "with the first key."
        )

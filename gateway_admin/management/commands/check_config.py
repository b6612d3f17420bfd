"""`manage.py check_config`: load the current configuration in the gateway's own loader and list its problems."""

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from gateway_admin.safety import current_problems


class Command(BaseCommand):
    help = (
        "Build the configuration snapshot and load it with the gateway's loader. Exits non-zero, naming each item "
        "a gateway would quarantine or the reason it would refuse the snapshot, when there is any."
    )

    def handle(self, *args, **options):
        with transaction.atomic():
            problems = sorted(current_problems(), key=lambda p: (p.kind, p.name, p.message))
        if problems:
            raise CommandError(
                f"{len(problems)} problem(s):\n" + "\n".join(f"  {p.kind} '{p.name}': {p.message}" for p in problems)
            )
        self.stdout.write("The configuration loads in the gateway: no problems.")

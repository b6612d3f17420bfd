"""The two groups shipped by default: Operators (every Sluice permission) and Readers (view only, no reveals).

Written by data migrations (gateway_admin 0002 onwards). A migration that adds a model or a permission calls
`grant_default_permissions` again, so Operators keep holding everything; `tests/management/test_permissions.py`
fails when that was forgotten.
"""

__all__ = ("OPERATORS", "READERS", "SLUICE_APPS", "grant_default_permissions")

OPERATORS = "Operators"
READERS = "Readers"
# The apps whose permissions the groups cover (settings.LOCAL_APPS; a test keeps the two equal).
SLUICE_APPS = (
    "gateway_admin",
    "named_values",
    "backends",
    "apis",
    "subscriptions",
    "policies",
    "usage",
    "content_safety",
)


def grant_default_permissions(apps, schema_editor=None) -> None:
    """Create the groups when missing and add every Sluice permission to Operators, every `view_*` to Readers.

    `apps` is a migration's historical registry. Permissions are normally created after the last migration ran
    (post_migrate), so they are created here first: on a fresh database they do not exist yet.
    """
    from django.contrib.auth.management import create_permissions

    for app_config in apps.get_app_configs():
        if app_config.label in SLUICE_APPS:
            app_config.models_module = True
            create_permissions(app_config, apps=apps, verbosity=0)
            app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    sluice = Permission.objects.filter(content_type__app_label__in=SLUICE_APPS)
    operators, _ = Group.objects.get_or_create(name=OPERATORS)
    operators.permissions.add(*sluice)
    readers, _ = Group.objects.get_or_create(name=READERS)
    readers.permissions.add(*sluice.filter(codename__startswith="view_"))

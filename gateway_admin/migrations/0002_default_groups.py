from django.db import migrations

from gateway_admin.groups import grant_default_permissions


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("gateway_admin", "0001_initial"),
        ("named_values", "0002_reveal_permission"),
        ("backends", "0001_initial"),
        ("apis", "0001_initial"),
        ("subscriptions", "0003_reveal_permission"),
        ("policies", "0001_initial"),
        ("usage", "0001_initial"),
    ]

    operations = [
        migrations.RunPython(grant_default_permissions, migrations.RunPython.noop),
    ]

from django.db import migrations, models


def create_revision_row(apps, schema_editor):
    ConfigRevision = apps.get_model("gateway_admin", "ConfigRevision")
    ConfigRevision.objects.get_or_create(pk=1, defaults={"revision": 1})


class Migration(migrations.Migration):
    initial = True

    dependencies = []

    operations = [
        migrations.CreateModel(
            name="ConfigRevision",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("revision", models.BigIntegerField(default=0, verbose_name="revision")),
            ],
            options={
                "verbose_name": "configuration revision",
                "verbose_name_plural": "configuration revisions",
                "constraints": [
                    models.CheckConstraint(condition=models.Q(("id", 1)), name="gateway_admin_configrevision_singleton")
                ],
            },
        ),
        migrations.RunPython(create_revision_row, migrations.RunPython.noop),
    ]

from django.db import migrations, models

OLD_FIELDS = (
    "unique",
    "unique_timeout",
    "key",
    "unique_on",
    "unique_raises",
    "unique_wait_for_expiry",
    "rate_limit",
)


def columns_to_options(apps, schema_editor):
    PolicyOverride = apps.get_model("heimdall", "PolicyOverride")
    for row in PolicyOverride.objects.all():
        values = {name: getattr(row, name) for name in OLD_FIELDS}
        row.options = {k: v for k, v in values.items() if v not in (None, "")}
        row.save(update_fields=["options"])


def options_to_columns(apps, schema_editor):
    PolicyOverride = apps.get_model("heimdall", "PolicyOverride")
    for row in PolicyOverride.objects.all():
        for name in OLD_FIELDS:
            if name in (row.options or {}):
                setattr(row, name, row.options[name])
        row.save()


class Migration(migrations.Migration):
    dependencies = [("heimdall", "0001_initial")]

    operations = [
        migrations.AddField(
            model_name="policyoverride",
            name="options",
            field=models.JSONField(blank=True, default=dict, verbose_name="options"),
        ),
        migrations.RunPython(columns_to_options, options_to_columns),
        *(migrations.RemoveField(model_name="policyoverride", name=name) for name in OLD_FIELDS),
        migrations.CreateModel(
            name="OverrideRevision",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("number", models.BigIntegerField(default=0)),
            ],
            options={"verbose_name": "override revision", "default_permissions": ()},
        ),
    ]

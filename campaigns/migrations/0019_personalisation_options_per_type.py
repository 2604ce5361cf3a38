"""Personalisation fields keep only the options of their type: file options no longer
default onto every field, and the ones already stored on other types are cleared."""

from django.db import migrations, models


def clear_other_types_options(apps, schema_editor):
    Field = apps.get_model("campaigns", "PersonalisationField")
    Field.objects.exclude(field_type="file").update(allowed_extensions="", max_file_size_kb=None)
    Field.objects.exclude(field_type__in=["text", "long_text"]).update(max_length=None)
    Field.objects.exclude(field_type="number").update(min_value=None, max_value=None)


class Migration(migrations.Migration):
    dependencies = [
        ("campaigns", "0018_sending_in_flight_and_progress"),
    ]

    operations = [
        migrations.AlterField(
            model_name="personalisationfield",
            name="allowed_extensions",
            field=models.CharField(
                blank=True, help_text="File fields: comma-separated extensions.", max_length=200
            ),
        ),
        migrations.AlterField(
            model_name="personalisationfield",
            name="max_file_size_kb",
            field=models.PositiveIntegerField(
                blank=True, help_text="File fields: maximum size in KiB.", null=True
            ),
        ),
        migrations.RunPython(clear_other_types_options, migrations.RunPython.noop),
    ]

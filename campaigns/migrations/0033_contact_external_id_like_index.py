"""Drop the LIKE-prefix index PostgreSQL gets for the contact's unique ``external_id``.

Django adds a second, ``varchar_pattern_ops`` index to every unique or indexed text column on
PostgreSQL, for ``LIKE 'prefix%'``. No page, API, task or targeting query reads contacts that
way: lookups by customer id are exact (the unique index), and the targeting's "starts with"
compares ``UPPER(external_id)``, which that index cannot serve. Only the demo and bench data
generators (``campaigns/synthetic.py``, ``campaigns/demo.py``) ask whether a prefix exists,
once per run. Every contact written paid for it all
the same (about 3 s of a 1M-contact import, measured with ``bench.imports``).
"""

from django.db import migrations


def _like_index(apps, schema_editor):
    model = apps.get_model("campaigns", "Contact")
    field = model._meta.get_field("external_id")
    name = schema_editor._create_index_name(model._meta.db_table, [field.column], suffix="_like")
    return model, field, name


def drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    _, _, name = _like_index(apps, schema_editor)
    schema_editor.execute(f"DROP INDEX IF EXISTS {schema_editor.quote_name(name)}")


def create(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    model, field, _ = _like_index(apps, schema_editor)
    schema_editor.execute(schema_editor._create_like_index_sql(model, field))


class Migration(migrations.Migration):
    dependencies = [("campaigns", "0032_scheduled_run_campaign")]

    operations = [migrations.RunPython(drop, create, elidable=False)]

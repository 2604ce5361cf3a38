"""Work tables are derived data rewritten constantly: on PostgreSQL they skip the WAL
(UNLOGGED). After a crash PostgreSQL empties them; a workflow run recomputes them."""

from django.db import migrations


def set_unlogged(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        table = schema_editor.quote_name(apps.get_model("campaigns", "WorkTableRow")._meta.db_table)
        schema_editor.execute(f"ALTER TABLE {table} SET UNLOGGED")


def set_logged(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        table = schema_editor.quote_name(apps.get_model("campaigns", "WorkTableRow")._meta.db_table)
        schema_editor.execute(f"ALTER TABLE {table} SET LOGGED")


class Migration(migrations.Migration):
    dependencies = [("campaigns", "0004_worktable_without_constraints")]
    operations = [migrations.RunPython(set_unlogged, set_logged)]

"""Trigram indexes for the contact search on PostgreSQL (part of a name or an email).

The search box matches ``UPPER(column) LIKE UPPER('%term%')`` (Django's ``icontains``); a GIN
index of trigrams over the same expression answers that without scanning a million rows.
``pg_trgm`` is a trusted extension (PostgreSQL 13+): the database owner may create it. SQLite
has no such index and keeps scanning, which is fine at its sizes.
"""

from django.db import migrations

COLUMNS = ("last_name", "first_name", "email")


def create(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    for column in COLUMNS:
        schema_editor.execute(
            f"CREATE INDEX IF NOT EXISTS contact_{column}_trgm ON campaigns_contact "
            f"USING gin ((UPPER({column}::text)) gin_trgm_ops)"
        )


def drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for column in COLUMNS:
        schema_editor.execute(f"DROP INDEX IF EXISTS contact_{column}_trgm")


class Migration(migrations.Migration):
    dependencies = [("campaigns", "0021_engagement_events")]

    operations = [migrations.RunPython(create, drop, elidable=False)]

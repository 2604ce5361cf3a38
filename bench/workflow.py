"""The 6-activity workflow benchmark: query, exclusion (of a second query), split, dedup,
distribution, end — run by the product's engine (a simulation, every activity executed as
its Celery task in-process) against the same statements written by hand."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

from django.db import connection, transaction

from campaigns.models import Activity, Campaign, Transition, WorkflowRun, WorkTableRow
from campaigns.workflow import engine
from campaigns.workflow.activities import output_table
from portal.celery import app as celery_app
from portal.models import Entity

NAME = "Bench workflow (6 activities)"
DISTRIBUTION_LIMIT = 1000


def build(three: dict, segment: dict) -> tuple[Campaign, Activity]:
    """The benchmark campaign (rebuilt each time); returns it and its distribution step."""
    central = Entity.objects.get(kind="central")
    Campaign.objects.filter(name=NAME).delete()
    campaign = Campaign.objects.create(name=NAME, kind="parent", entity=central)

    def add(key: str, kind: str, **settings: object) -> Activity:
        return Activity.objects.create(campaign=campaign, key=key, type=kind, settings=settings)

    target = add("target", "query", conditions=three)
    skiers = add("skiers", "query", conditions=segment)
    minus = add("minus", "exclusion")
    split = add("split", "split", branches=[{"label": "half", "percent": 50}], remainder="rest")
    dedup = add("dedup", "deduplication")
    share = add("share", "distribution", default_limit=DISTRIBUTION_LIMIT)
    end = add("end", "end")
    for source, target_activity, label in [
        (target, minus, "out"), (skiers, minus, "out"), (minus, split, "out"),
        (split, dedup, "half"), (split, end, "rest"), (dedup, share, "out"), (share, end, "out"),
    ]:  # fmt: skip
        Transition.objects.create(
            campaign=campaign, source=source, target=target_activity, label=label
        )
    return campaign, share


def measure_workflow(
    measure: Callable[[str, Callable[[], int], Callable[[], int]], None],
    raw: Callable[..., int],
    three: dict,
    segment: dict,
    born_before: date,
    since: date,
) -> None:
    campaign, share = build(three, segment)
    q = connection.ops.quote_name
    contact, booking, wt = (q("campaigns_contact"), q("campaigns_booking"),
                            q(WorkTableRow._meta.db_table))  # fmt: skip
    columns = "run_key, name, contact_id, secondary_id, entity_id, created_at"

    def product() -> int:
        celery_app.conf.task_always_eager = True
        run = engine.start_run(campaign=campaign, actor=None, simulate=True)
        run = WorkflowRun.objects.get(pk=run.pk)
        assert run.state == "completed", run.error
        rows = WorkTableRow.objects.filter(
            run_key=run.run_key, name=output_table(share, "out")
        ).count()
        WorkTableRow.objects.filter(run_key=run.run_key).delete()
        return rows

    def raw_sql() -> int:
        key = "bench-raw-wf"
        with transaction.atomic():
            if connection.vendor == "postgresql":  # as the product does (stale statistics)
                raw("SET LOCAL enable_nestloop = off")
            raw(f"DELETE FROM {wt} WHERE run_key = %s", [key])
            raw(
                f"INSERT INTO {wt} ({columns}) SELECT %s, 'target', c.id, NULL, c.entity_id, "
                f"CURRENT_TIMESTAMP FROM {contact} c WHERE c.email_consent "
                "AND c.language IN (%s, %s) AND c.birth_date < %s",
                [key, "fr", "en", born_before],
            )
            raw(
                f"INSERT INTO {wt} ({columns}) SELECT %s, 'skiers', c.id, NULL, c.entity_id, "
                f"CURRENT_TIMESTAMP FROM {contact} c WHERE EXISTS (SELECT 1 FROM {booking} b "
                "WHERE b.contact_id = c.id AND b.product = %s AND b.booking_date >= %s "
                "AND b.booking_date <= %s)",
                [key, "Ski week", since, date.today()],
            )
            raw(
                f"INSERT INTO {wt} ({columns}) SELECT run_key, 'minus', contact_id, "
                f"secondary_id, entity_id, CURRENT_TIMESTAMP FROM {wt} t WHERE run_key = %s "
                f"AND name = 'target' AND NOT EXISTS (SELECT 1 FROM {wt} s "
                "WHERE s.run_key = %s AND s.name = 'skiers' AND s.contact_id = t.contact_id)",
                [key, key],
            )
            raw(
                f"INSERT INTO {wt} ({columns}) SELECT run_key, 'half', contact_id, "
                f"secondary_id, entity_id, CURRENT_TIMESTAMP FROM {wt} WHERE run_key = %s "
                "AND name = 'minus' AND (contact_id * 2654435761) %% 100 < 50",
                [key],
            )
            raw(
                f"INSERT INTO {wt} ({columns}) SELECT run_key, 'rest', contact_id, "
                f"secondary_id, entity_id, CURRENT_TIMESTAMP FROM {wt} m WHERE run_key = %s "
                f"AND name = 'minus' AND NOT EXISTS (SELECT 1 FROM {wt} h WHERE h.run_key = %s "
                "AND h.name = 'half' AND h.contact_id = m.contact_id)",
                [key, key],
            )
            raw(
                f"INSERT INTO {wt} ({columns}) SELECT run_key, 'dedup', contact_id, "
                f"secondary_id, entity_id, CURRENT_TIMESTAMP FROM {wt} WHERE id IN "
                f"(SELECT MIN(id) FROM {wt} WHERE run_key = %s AND name = 'half' "
                "GROUP BY contact_id)",
                [key],
            )
            rows = raw(
                f"INSERT INTO {wt} ({columns}) SELECT run_key, 'share', contact_id, "
                "secondary_id, entity_id, CURRENT_TIMESTAMP FROM (SELECT *, ROW_NUMBER() "
                "OVER (PARTITION BY entity_id ORDER BY id) AS rn FROM "
                f"{wt} WHERE run_key = %s AND name = 'dedup' AND entity_id IS NOT NULL) r "
                "WHERE rn <= %s",
                [key, DISTRIBUTION_LIMIT],
            )
            raw(f"DELETE FROM {wt} WHERE run_key = %s", [key])
        return rows

    measure("6-activity workflow (simulation)", product, raw_sql)
    campaign.delete()

"""The 6-activity workflow benchmark: query, exclusion (of a second query), split, dedup,
distribution, end — run by the product's engine (a simulation, every activity executed as
its Celery task in-process) against the same statements written by hand."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

from django.db import connection

from campaigns import targeting
from campaigns.models import Activity, Campaign, Transition, WorkflowRun
from campaigns.targeting import worktables
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
    measure: Callable[..., None],
    raw: Callable[..., int],
    three: dict,
    segment: dict,
    born_before: date,
    since: date,
) -> None:
    from bench.targeting import ctas, drop_bench_tables, shaped

    campaign, share = build(three, segment)
    q = connection.ops.quote_name
    contact, booking = q("campaigns_contact"), q("campaigns_booking")

    def product() -> int:
        celery_app.conf.task_always_eager = True
        run = engine.start_run(campaign=campaign, actor=None, simulate=True)
        run = WorkflowRun.objects.get(pk=run.pk)
        assert run.state == "completed", run.error
        rows = worktables.find(run.run_key, output_table(share, "out")).rows
        targeting.drop_run(run.run_key)
        return rows

    def statements(shape: Callable[[str], str], prefix: str) -> int:
        """The six steps as CREATE TABLE … AS SELECT, each reading the previous tables."""

        def t(name: str) -> str:
            return q(f"{prefix}_{name}")

        bucket = "MOD(contact_id * 2654435761, 100)"
        ctas(
            f"{prefix}_target",
            shape(
                "SELECT c.id AS contact_id, CAST(NULL AS bigint) AS secondary_id, c.entity_id "
                f"FROM {contact} c WHERE c.email_consent AND c.language IN (%s, %s) "
                "AND c.birth_date < %s"
            ),
            ["fr", "en", born_before],
        )
        ctas(
            f"{prefix}_skiers",
            shape(
                "SELECT c.id AS contact_id, CAST(NULL AS bigint) AS secondary_id, c.entity_id "
                f"FROM {contact} c WHERE EXISTS (SELECT 1 FROM {booking} b "
                "WHERE b.contact_id = c.id AND b.product = %s AND b.booking_date >= %s "
                "AND b.booking_date <= %s)"
            ),
            ["Ski week", since, date.today()],
        )
        columns = "contact_id, secondary_id, entity_id"
        ctas(
            f"{prefix}_minus",
            shape(
                f"SELECT {columns} FROM {t('target')} x WHERE NOT EXISTS "
                f"(SELECT 1 FROM {t('skiers')} s WHERE s.contact_id = x.contact_id)"
            ),
        )
        ctas(
            f"{prefix}_half",
            shape(f"SELECT {columns} FROM {t('minus')} WHERE {bucket} >= 0 AND {bucket} < 50"),
        )
        ctas(
            f"{prefix}_rest",
            shape(
                f"SELECT {columns} FROM {t('minus')} m WHERE NOT EXISTS "
                f"(SELECT 1 FROM {t('half')} h WHERE h.contact_id = m.contact_id)"
            ),
        )
        numbered = shape is shaped  # the bare limit has no row number: dedup by ctid-free MIN
        if numbered:
            dedup = (
                f"SELECT {columns} FROM {t('half')} WHERE id IN "
                f"(SELECT MIN(id) FROM {t('half')} GROUP BY contact_id)"
            )
        else:  # one row per contact already (a contact-level target): the same rows
            dedup = f"SELECT DISTINCT {columns} FROM {t('half')}"
        ctas(f"{prefix}_dedup", shape(dedup))
        order = "contact_id, secondary_id" + (", id" if numbered else "")
        rows = ctas(
            f"{prefix}_share",
            shape(
                f"SELECT {columns} FROM (SELECT {columns}, ROW_NUMBER() OVER "
                f"(PARTITION BY entity_id ORDER BY {order}) AS rn FROM {t('dedup')} "
                "WHERE entity_id IS NOT NULL) r WHERE rn <= %s"
            ),
            [DISTRIBUTION_LIMIT],
        )
        drop_bench_tables(*(f"{prefix}_{name}" for name in STEPS))
        return rows

    measure(
        "6-activity workflow (simulation)",
        product,
        lambda: statements(shaped, "bench_raw_wf"),
        lambda: statements(lambda select: select, "bench_limit_wf"),
    )
    campaign.delete()


STEPS = ("target", "skiers", "minus", "half", "rest", "dedup", "share")

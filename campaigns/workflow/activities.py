"""Activity types: each runs as set operations over work tables (their settings are typed
and validated by the forms of ``campaigns.workflow.forms``).

An activity reads one work table per incoming transition and writes one work table per
output (``out``, or a split's branch labels), named ``a<activity id>.<label>`` within the run
(the registry's step name; the table itself is ``wt_<registry id>``, see
``campaigns.targeting.worktables``). No activity loads contacts into Python: every step is one
``CREATE … AS SELECT`` reading its inputs as querysets.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any, ClassVar

from django.db.models import (
    Avg,
    Count,
    Exists,
    F,
    Func,
    JSONField,
    Max,
    Min,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
)
from django.db.models.functions import Coalesce, JSONObject, Mod
from django.utils import timezone
from django.utils.dateparse import parse_datetime, parse_time

from campaigns import targeting
from campaigns.models import Activity, ActivityExecution, Contact, SavedQuery
from campaigns.targeting.registry import DIMENSIONS
from portal.models import Entity


def output_table(activity: Activity, label: str) -> str:
    return f"a{activity.pk}.{label}"


@dataclass
class Context:
    run_key: str
    activity: Activity
    input_names: list[str]  # one work table per incoming transition, in transition order
    execution: ActivityExecution | None = None
    simulate: bool = False

    @cached_property
    def inputs(self) -> list[QuerySet]:
        """The input tables as querysets (looked up once per activity run)."""
        return [targeting.work_table(self.run_key, name) for name in self.input_names]

    def table(self, label: str) -> str:
        return output_table(self.activity, label)

    def write(self, label: str, rows: QuerySet, data: Any = None) -> int:
        return targeting.copy_rows(rows, run_key=self.run_key, name=self.table(label), data=data)


class ActivityType:
    """Base class: subclasses say how many inputs they take and what they output."""

    min_inputs = 1
    max_inputs: int | None = 1
    # A type that builds its own population may only be started by a scheduler or a wait.
    triggered_only = False

    def outputs(self, settings: Mapping[str, Any]) -> list[str]:
        return ["out"]

    def park(self, ctx: Context, now: datetime) -> datetime | None:
        """Before a real run executes it: a moment to sleep until, or None to run now."""
        return None

    def run(self, ctx: Context) -> None:  # pragma: no cover - every type overrides it
        raise NotImplementedError


class Query(ActivityType):
    min_inputs = 0
    max_inputs = 1
    triggered_only = True

    def run(self, ctx: Context) -> None:
        settings = ctx.activity.settings
        self.materialise(
            ctx,
            settings.get("dimension", "contact"),
            settings.get("conditions") or {},
            settings.get("entity_path"),
        )

    @staticmethod
    def materialise(
        ctx: Context, dimension: str, conditions: Any, entity_path: str | None = None
    ) -> None:
        """The target of a condition tree, within the campaign's entity, as the output."""
        queryset = targeting.target_queryset(
            dimension, conditions, entity=ctx.activity.campaign.entity
        )
        targeting.materialise(
            queryset,
            dimension=dimension,
            run_key=ctx.run_key,
            name=output_table(ctx.activity, "out"),
            entity_path=entity_path,
        )


class ReadAudience(Query):
    def run(self, ctx: Context) -> None:
        query = SavedQuery.objects.get(pk=ctx.activity.settings["saved_query"])
        self.materialise(ctx, query.dimension, query.conditions)


class Union(ActivityType):
    min_inputs, max_inputs = 2, None

    def run(self, ctx: Context) -> None:
        # One row per (contact, secondary record): the first one met, in input order.
        targeting.union_rows(ctx.run_key, ctx.table("out"), ctx.inputs)


class Intersection(ActivityType):
    min_inputs, max_inputs = 2, None

    def run(self, ctx: Context) -> None:
        rows = ctx.inputs[0]
        for other in ctx.inputs[1:]:
            rows = rows.filter(Exists(other.filter(contact_id=OuterRef("contact_id"))))
        ctx.write("out", rows)


class Exclusion(ActivityType):
    """The first input without the contacts of the others (``out``, the kept rows); the
    rows taken out go to ``removed`` when a transition reads them."""

    min_inputs, max_inputs = 2, None

    def outputs(self, settings: Mapping[str, Any]) -> list[str]:
        return ["out", "removed"]

    def run(self, ctx: Context) -> None:
        rows = ctx.inputs[0]
        for other in ctx.inputs[1:]:
            # NOT EXISTS (an anti-join), never NOT IN: PostgreSQL cannot hash a NOT IN
            # subquery larger than work_mem and would compare every pair of rows.
            rows = rows.exclude(Exists(other.filter(contact_id=OuterRef("contact_id"))))
        ctx.write("out", rows)
        if ctx.activity.outgoing.filter(label="removed").exists():
            removed = ctx.inputs[0]
            kept = targeting.work_table(ctx.run_key, ctx.table("out"))
            removed = removed.exclude(Exists(kept.filter(contact_id=OuterRef("contact_id"))))
            ctx.write("removed", removed)


class Deduplication(ActivityType):
    """One row per contact (the first one), e.g. after a booking-level query."""

    def run(self, ctx: Context) -> None:
        rows = ctx.inputs[0]
        keep = rows.values("contact_id").annotate(first=Min("id")).values("first")
        ctx.write("out", rows.model.objects.filter(pk__in=Subquery(keep)))


class Split(ActivityType):
    """Branches by conditions on the contact, or by percentages (a stable pseudo-random
    bucket per contact), each optionally limited; a row goes to the first branch it fits.
    ``remainder`` names an output for the rows no branch took."""

    def outputs(self, settings: Mapping[str, Any]) -> list[str]:
        labels = [branch["label"] for branch in settings.get("branches", [])]
        return labels + ([settings["remainder"]] if settings.get("remainder") else [])

    def run(self, ctx: Context) -> None:
        source = ctx.inputs[0].annotate(
            _bucket=Mod(F("contact_id") * 2654435761, 100)  # stable per contact
        )
        settings = ctx.activity.settings
        predicates: list[Q | Exists] = []
        start = 0
        for branch in settings["branches"]:
            if "percent" in branch:
                predicates.append(Q(_bucket__gte=start, _bucket__lt=start + branch["percent"]))
                start += branch["percent"]
            else:
                matching = Contact.objects.filter(
                    targeting.compile_conditions("contact", branch.get("conditions") or {})
                )
                # EXISTS, never IN: excluded, it must stay an anti-join (see Exclusion).
                predicates.append(Exists(matching.filter(pk=OuterRef("contact_id"))))
        # Every branch predicate is a property of the contact, so without limits "a contact
        # an earlier branch took" is "a contact an earlier predicate holds for": plain
        # filters over the input, no anti-join against the branch tables just written. A
        # limit keeps only some of a branch's rows: then the branch tables are read back.
        limited = any(branch.get("limit") is not None for branch in settings["branches"])
        taken: list[str] = []
        for branch, predicate in zip(settings["branches"], predicates, strict=True):
            if limited:
                rows = self._untaken(ctx, source, taken).filter(predicate)
            else:
                rows = self._unmatched(source, predicates[: len(taken)]).filter(predicate)
            if branch.get("limit") is not None:
                rows = rows.model.objects.filter(
                    pk__in=Subquery(rows.order_by("id").values("pk")[: branch["limit"]])
                )
            ctx.write(branch["label"], rows)
            taken.append(branch["label"])
        if settings.get("remainder"):
            if limited:
                rest = self._untaken(ctx, ctx.inputs[0], taken)
            else:
                rest = self._unmatched(source, predicates)
            ctx.write(settings["remainder"], rest)

    @staticmethod
    def _unmatched(rows: QuerySet, predicates: list[Q | Exists]) -> QuerySet:
        for predicate in predicates:
            rows = rows.exclude(predicate)
        return rows

    def _untaken(self, ctx: Context, rows: QuerySet, labels: list[str]) -> QuerySet:
        """``rows`` without the contacts of earlier branches (branch tables hold copies, so
        they are matched on the contact): one NOT EXISTS, an anti-join, per branch table."""
        for label in labels:
            taken = targeting.work_table(ctx.run_key, output_table(ctx.activity, label))
            rows = rows.exclude(Exists(taken.filter(contact_id=OuterRef("contact_id"))))
        return rows


class Distribution(ActivityType):
    def run(self, ctx: Context) -> None:
        self.distribute(ctx, "out")

    @staticmethod
    def distribute(ctx: Context, label: str) -> targeting.DistributionReport:
        """The input shared among entities by the activity's limits, as output ``label``."""
        settings = ctx.activity.settings
        codes = settings.get("limits", {})
        limits = dict(Entity.objects.filter(code__in=list(codes)).values_list("pk", "code"))
        return targeting.distribute(
            run_key=ctx.run_key,
            source=ctx.input_names[0],
            target=ctx.table(label),
            limits={pk: codes[code] for pk, code in limits.items()},
            default_limit=settings.get("default_limit"),
            order=settings.get("order", []),
        )


class Wait(ActivityType):
    """Passes its input on after a duration (``days``, ``hours``, ``minutes``)."""

    def wake_at(self, settings: Mapping[str, Any], now: datetime) -> datetime | None:
        return now + timedelta(
            days=settings.get("days", 0),
            hours=settings.get("hours", 0),
            minutes=settings.get("minutes", 0),
        )

    def park(self, ctx: Context, now: datetime) -> datetime | None:
        moment = self.wake_at(ctx.activity.settings, now)
        return moment if moment is not None and moment > now else None

    def run(self, ctx: Context) -> None:
        if ctx.input_names:
            ctx.write("out", ctx.inputs[0])


WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


class Scheduler(Wait):
    """Starts the workflow (or passes its input on) at a moment: once (``at``, ISO 8601) or
    recurring (``every`` hour at ``minute``, day at ``time``, or week on ``weekdays`` at
    ``time``; optionally ``times`` occurrences, ``until`` a moment). A recurring scheduler
    starts a new run of the workflow at each occurrence."""

    min_inputs = 0

    @staticmethod
    def recurring(settings: Mapping[str, Any]) -> bool:
        return "every" in settings

    def wake_at(self, settings: Mapping[str, Any], now: datetime) -> datetime | None:
        """The next moment after ``now`` (None when a recurrence has run out)."""
        if not self.recurring(settings):
            return _aware(parse_datetime(str(settings["at"])))
        local = timezone.localtime(now)
        every = settings["every"]
        if every == "hour":
            moment = local.replace(minute=settings.get("minute", 0), second=0, microsecond=0)
            step = timedelta(hours=1)
        else:
            clock = parse_time(str(settings["time"]))
            moment = local.replace(hour=clock.hour, minute=clock.minute, second=0, microsecond=0)
            step = timedelta(days=1)
        wanted = {WEEKDAYS.index(day) for day in settings.get("weekdays", WEEKDAYS)}
        while moment <= local or (every == "week" and moment.weekday() not in wanted):
            moment += step
        until = settings.get("until")
        if until and moment > _aware(parse_datetime(str(until))):
            return None
        return moment

    def park(self, ctx: Context, now: datetime) -> datetime | None:
        moment = self.wake_at(ctx.activity.settings, now)
        return moment if moment is not None and moment > now else None


def _parse(parser: Callable[[str], Any], value: Any) -> Any:
    """A date, time or datetime parsed from text, or None when it is not one."""
    try:
        return parser(str(value if value is not None else ""))
    except ValueError:
        return None


def _aware(moment: datetime) -> datetime:
    return moment if timezone.is_aware(moment) else timezone.make_aware(moment)


class Enrichment(ActivityType):
    """Attaches data to each row for later personalisation, in one INSERT … SELECT:
    ``{"name": …, "field": <contact field>}``, ``{"name": …, "record": "booking",
    "field": <field of the row's record>}``, or ``{"name": …, "relation": "bookings",
    "aggregate": "count"|"sum"|"min"|"max"|"avg", "field": …, "where": {conditions}}``."""

    AGGREGATES = {"count": Count, "sum": Sum, "min": Min, "max": Max, "avg": Avg}

    def expression(self, item: Mapping[str, Any]) -> Any:
        """The SQL expression for one enrichment, keyed on the work-table row."""
        if "relation" in item:
            relation = DIMENSIONS["contact"].relations.get(item["relation"])
            if relation is None:
                raise ValueError(
                    f"relation must be one of {', '.join(DIMENSIONS['contact'].relations)}"
                )
            spec = DIMENSIONS[relation.dimension]
            aggregate = self.AGGREGATES.get(item.get("aggregate", "count"))
            if aggregate is None:
                raise ValueError(f"aggregate must be one of {', '.join(self.AGGREGATES)}")
            related = spec.model.objects.filter(contact_id=OuterRef("contact_id"))
            if item.get("where"):
                related = related.filter(
                    targeting.compile_conditions(relation.dimension, item["where"])
                )
            if aggregate is Count:
                value = Count("pk")
            else:
                field = spec.fields.get(item.get("field", ""))
                if field is None or field.type not in ("number", "date", "datetime"):
                    raise ValueError(
                        f"field must be a number or date field of {relation.dimension}"
                    )
                value = aggregate(field.path)
            subquery = Subquery(
                related.order_by().values("contact_id").annotate(_v=value).values("_v")[:1]
            )
            return Coalesce(subquery, 0) if aggregate is Count else subquery
        if "record" in item:
            spec = DIMENSIONS.get(item["record"])
            if spec is None or spec.contact_path == "pk":
                raise ValueError("record must be booking or subscription")
            source = spec.model.objects.filter(pk=OuterRef("secondary_id"))
        else:
            spec = DIMENSIONS["contact"]
            source = Contact.objects.filter(pk=OuterRef("contact_id"))
        field = spec.fields.get(item.get("field", ""))
        if field is None:
            raise ValueError(f"field must be a field of {spec.name}")
        return Subquery(source.values(field.path)[:1])

    def run(self, ctx: Context) -> None:
        values = {item["name"]: self.expression(item) for item in ctx.activity.settings["fields"]}
        ctx.write("out", ctx.inputs[0], data=MergeJSON(F("data"), JSONObject(**values)))


class MergeJSON(Func):
    """``lhs`` (NULL counts as {}) with the keys of ``rhs`` added or replaced."""

    arity = 2
    output_field = JSONField()

    def as_sql(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list]:
        lhs, lhs_params = compiler.compile(self.source_expressions[0])
        rhs, rhs_params = compiler.compile(self.source_expressions[1])
        if connection.vendor == "postgresql":
            merged = (
                f"(CASE WHEN jsonb_typeof({lhs}) = 'object' THEN {lhs} ELSE '{{}}'::jsonb END "
                f"|| {rhs})"
            )
            return merged, [*lhs_params, *lhs_params, *rhs_params]
        return f"JSON_PATCH(COALESCE({lhs}, '{{}}'), {rhs})", [*lhs_params, *rhs_params]


class LocalApproval(Distribution):
    """Collaborative by target approval: the input is shared among entities (the
    distribution's limits), each entity reviews its list through an approval request, and
    the output keeps the approved lists without the contacts removed from them. At the
    deadline, entities that did not answer get ``on_deadline`` (send_all or send_none).
    In ``report`` mode the input passes on and each entity is sent a report instead."""

    DEFAULTS = ("send_all", "send_none")

    def park(self, ctx: Context, now: datetime) -> datetime | None:
        from campaigns.workflow import local_approval

        if ctx.activity.settings.get("mode") == "report":
            return None
        return local_approval.open_lists(ctx, now)

    def run(self, ctx: Context) -> None:
        from campaigns.workflow import local_approval

        if ctx.activity.settings.get("mode") == "report":
            ctx.write("out", ctx.inputs[0])
            if not ctx.simulate:
                local_approval.send_reports(ctx)
            return
        if ctx.simulate:  # a dry run: every list as if approved unchanged
            self.distribute(ctx, "out")
            return
        local_approval.close_lists(ctx)


class Delivery(ActivityType):
    """Hands its population to a delivery. In a real run, the hooks (the deliveries app's)
    prepare and send it and the activity waits until it is sent; the population passes on
    unchanged, so later steps (a report to the entities) see who was targeted."""

    hooks: ClassVar[list[Callable[[Context, datetime], datetime | None]]] = []

    def park(self, ctx: Context, now: datetime) -> datetime | None:
        moments = [moment for hook in self.hooks if (moment := hook(ctx, now))]
        return min(moments) if moments else None

    def run(self, ctx: Context) -> None:
        ctx.write("out", ctx.inputs[0])


class End(ActivityType):
    min_inputs, max_inputs = 1, None

    def outputs(self, settings: Mapping[str, Any]) -> list[str]:
        return []

    def run(self, ctx: Context) -> None:
        """Nothing to do: the incoming populations are the workflow's result."""


TYPES: dict[str, ActivityType] = {
    "query": Query(),
    "read_audience": ReadAudience(),
    "union": Union(),
    "intersection": Intersection(),
    "exclusion": Exclusion(),
    "split": Split(),
    "deduplication": Deduplication(),
    "distribution": Distribution(),
    "wait": Wait(),
    "scheduler": Scheduler(),
    "enrichment": Enrichment(),
    "local_approval": LocalApproval(),
    "delivery": Delivery(),
    "end": End(),
}

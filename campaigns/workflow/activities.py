"""Activity types: each validates its settings and runs as set operations over work tables.

An activity reads one work table per incoming transition and writes one work table per
output (``out``, or a split's branch labels), named ``a<activity id>.<label>`` within the run.
No activity loads contacts into Python: every step is an ``INSERT … SELECT``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db.models import F, Min, QuerySet, Subquery
from django.db.models.functions import Mod
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from campaigns import targeting
from campaigns.models import Activity, Contact, SavedQuery, WorkTableRow
from campaigns.targeting.registry import DIMENSIONS
from campaigns.targeting.worktables import PRIORITY_FIELDS
from portal.models import Entity

ENTITY_PATHS = {"contact": {"entity"}, "booking": {"contact__entity", "store__entity"},
                "subscription": {"contact__entity"}}  # fmt: skip
MAX_LIMIT = 100_000_000


def output_table(activity: Activity, label: str) -> str:
    return f"a{activity.pk}.{label}"


@dataclass
class Context:
    run_key: str
    activity: Activity
    input_names: list[str]  # one work table per incoming transition, in transition order

    @property
    def inputs(self) -> list[QuerySet]:
        return [targeting.work_table(self.run_key, name) for name in self.input_names]

    def write(self, label: str, rows: QuerySet) -> int:
        return targeting.copy_rows(
            rows, run_key=self.run_key, name=output_table(self.activity, label)
        )


class ActivityType:
    """Base class: subclasses say how many inputs they take and what they output."""

    min_inputs = 1
    max_inputs: int | None = 1

    def validate(self, settings: Mapping[str, Any]) -> list[str]:
        return []

    def outputs(self, settings: Mapping[str, Any]) -> list[str]:
        return ["out"]

    def run(self, ctx: Context) -> None:  # pragma: no cover - every type overrides it
        raise NotImplementedError


def _limit(value: Any, name: str = "limit") -> list[str]:
    if value is None:
        return []
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_LIMIT:
        return [f"{name} must be a whole number between 0 and {MAX_LIMIT}"]
    return []


def _conditions_problems(dimension: str, conditions: Any, where: str = "conditions") -> list[str]:
    try:
        targeting.compile_conditions(dimension, conditions)
    except targeting.TargetingError as exc:
        return [f"{where}: {message}" for message in exc.messages]
    return []


class Query(ActivityType):
    min_inputs = 0
    max_inputs = 0

    def validate(self, settings: Mapping[str, Any]) -> list[str]:
        dimension = settings.get("dimension", "contact")
        if dimension not in DIMENSIONS:
            return [f"dimension must be one of {', '.join(DIMENSIONS)}"]
        problems = _conditions_problems(dimension, settings.get("conditions") or {})
        entity_path = settings.get("entity_path")
        if entity_path and entity_path not in ENTITY_PATHS[dimension]:
            problems.append(f"entity_path must be one of {sorted(ENTITY_PATHS[dimension])}")
        return problems

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
    def validate(self, settings: Mapping[str, Any]) -> list[str]:
        query = SavedQuery.objects.filter(pk=settings.get("saved_query")).first()
        if query is None:
            return ["saved_query must be the id of a saved audience"]
        return []

    def run(self, ctx: Context) -> None:
        query = SavedQuery.objects.get(pk=ctx.activity.settings["saved_query"])
        self.materialise(ctx, query.dimension, query.conditions)


class Union(ActivityType):
    min_inputs, max_inputs = 2, None

    def run(self, ctx: Context) -> None:
        rows = ctx.inputs[0]
        for other in ctx.inputs[1:]:
            rows = rows | other
        # One row per (contact, secondary record): the first one met.
        keep = rows.values("contact_id", "secondary_id").annotate(first=Min("id")).values("first")
        ctx.write("out", WorkTableRow.objects.filter(pk__in=Subquery(keep)))


class Intersection(ActivityType):
    min_inputs, max_inputs = 2, None

    def run(self, ctx: Context) -> None:
        rows = ctx.inputs[0]
        for other in ctx.inputs[1:]:
            rows = rows.filter(contact_id__in=other.values("contact_id"))
        ctx.write("out", rows)


class Exclusion(ActivityType):
    """The first input without the contacts of the others."""

    min_inputs, max_inputs = 2, None

    def run(self, ctx: Context) -> None:
        rows = ctx.inputs[0]
        for other in ctx.inputs[1:]:
            rows = rows.exclude(contact_id__in=other.values("contact_id"))
        ctx.write("out", rows)


class Deduplication(ActivityType):
    """One row per contact (the first one), e.g. after a booking-level query."""

    def run(self, ctx: Context) -> None:
        keep = ctx.inputs[0].values("contact_id").annotate(first=Min("id")).values("first")
        ctx.write("out", WorkTableRow.objects.filter(pk__in=Subquery(keep)))


class Split(ActivityType):
    """Branches by conditions on the contact, or by percentages (a stable pseudo-random
    bucket per contact), each optionally limited; a row goes to the first branch it fits.
    ``remainder`` names an output for the rows no branch took."""

    def validate(self, settings: Mapping[str, Any]) -> list[str]:
        branches = settings.get("branches")
        if not isinstance(branches, list) or not branches:
            return ["branches must be a non-empty list"]
        problems, labels, total = [], set(), 0
        for index, branch in enumerate(branches):
            where = f"branches[{index}]"
            if not isinstance(branch, dict):
                problems.append(f"{where} must be an object")
                continue
            label = branch.get("label")
            if not isinstance(label, str) or not label or label in labels:
                problems.append(f"{where}.label must be a distinct, non-empty text")
            labels.add(label)
            if "percent" in branch:
                percent = branch["percent"]
                if (
                    isinstance(percent, bool)
                    or not isinstance(percent, int)
                    or not (0 < percent <= 100)
                ):
                    problems.append(f"{where}.percent must be a whole number from 1 to 100")
                else:
                    total += percent
            else:
                problems += _conditions_problems(
                    "contact", branch.get("conditions") or {}, f"{where}.conditions"
                )
            problems += _limit(branch.get("limit"), f"{where}.limit")
        if total > 100:
            problems.append("percentages add up to more than 100")
        remainder = settings.get("remainder")
        if remainder is not None and (not isinstance(remainder, str) or remainder in labels):
            problems.append("remainder must be a label distinct from the branches")
        return problems

    def outputs(self, settings: Mapping[str, Any]) -> list[str]:
        labels = [branch["label"] for branch in settings.get("branches", [])]
        return labels + ([settings["remainder"]] if settings.get("remainder") else [])

    def run(self, ctx: Context) -> None:
        source = ctx.inputs[0].annotate(
            _bucket=Mod(F("contact_id") * 2654435761, 100)  # stable per contact
        )
        taken: list[str] = []
        start = 0
        settings = ctx.activity.settings
        for branch in settings["branches"]:
            rows = source.exclude(pk__in=self._taken(ctx, taken))
            if "percent" in branch:
                rows = rows.filter(_bucket__gte=start, _bucket__lt=start + branch["percent"])
                start += branch["percent"]
            else:
                matching = Contact.objects.filter(
                    targeting.compile_conditions("contact", branch.get("conditions") or {})
                )
                rows = rows.filter(contact_id__in=matching.values("pk"))
            if branch.get("limit") is not None:
                rows = WorkTableRow.objects.filter(
                    pk__in=Subquery(rows.order_by("id").values("pk")[: branch["limit"]])
                )
            ctx.write(branch["label"], rows)
            taken.append(branch["label"])
        if settings.get("remainder"):
            ctx.write(settings["remainder"], ctx.inputs[0].exclude(pk__in=self._taken(ctx, taken)))

    def _taken(self, ctx: Context, labels: list[str]) -> QuerySet:
        """Source rows already written to earlier branches (matched on the contact and
        secondary record, since branch tables hold copies)."""
        names = [output_table(ctx.activity, label) for label in labels]
        earlier = WorkTableRow.objects.filter(run_key=ctx.run_key, name__in=names)
        return ctx.inputs[0].filter(contact_id__in=earlier.values("contact_id")).values("pk")


class Distribution(ActivityType):
    def validate(self, settings: Mapping[str, Any]) -> list[str]:
        problems = _limit(settings.get("default_limit"), "default_limit")
        limits = settings.get("limits", {})
        if not isinstance(limits, dict):
            return [*problems, "limits must map entity codes to numbers"]
        unknown = set(limits) - set(Entity.objects.filter(code__in=list(limits)).values_list(
            "code", flat=True))  # fmt: skip
        if unknown:
            problems.append(f"unknown entity code(s) in limits: {', '.join(sorted(unknown))}")
        for code, limit in limits.items():
            problems += _limit(limit, f"limits.{code}")
        order = settings.get("order", [])
        if not isinstance(order, list) or any(
            not isinstance(item, str) or item.lstrip("-") not in PRIORITY_FIELDS for item in order
        ):
            problems.append(f"order may use {', '.join(sorted(PRIORITY_FIELDS))}")
        return problems

    def run(self, ctx: Context) -> None:
        settings = ctx.activity.settings
        codes = settings.get("limits", {})
        limits = dict(Entity.objects.filter(code__in=list(codes)).values_list("pk", "code"))
        targeting.distribute(
            run_key=ctx.run_key,
            source=ctx.input_names[0],
            target=output_table(ctx.activity, "out"),
            limits={pk: codes[code] for pk, code in limits.items()},
            default_limit=settings.get("default_limit"),
            order=settings.get("order", []),
        )


class Wait(ActivityType):
    """Passes its input on after a duration (``days``, ``hours``, ``minutes``)."""

    def validate(self, settings: Mapping[str, Any]) -> list[str]:
        units = {key: settings.get(key, 0) for key in ("days", "hours", "minutes")}
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in units.values()):
            return ["days, hours and minutes must be whole numbers of at least 0"]
        if not any(units.values()):
            return ["give a duration in days, hours or minutes"]
        return []

    def wake_at(self, settings: Mapping[str, Any], now: Any) -> Any:
        return now + timedelta(
            days=settings.get("days", 0),
            hours=settings.get("hours", 0),
            minutes=settings.get("minutes", 0),
        )

    def run(self, ctx: Context) -> None:
        ctx.write("out", ctx.inputs[0])


class Scheduler(Wait):
    """Passes its input on at a date and time (``at``, ISO 8601 with a time zone)."""

    def validate(self, settings: Mapping[str, Any]) -> list[str]:
        moment = parse_datetime(str(settings.get("at", "")))
        if moment is None:
            return ["at must be a date and time such as 2030-05-01T09:00:00+02:00"]
        return []

    def wake_at(self, settings: Mapping[str, Any], now: Any) -> Any:
        moment = parse_datetime(str(settings["at"]))
        return moment if timezone.is_aware(moment) else timezone.make_aware(moment)


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
    "end": End(),
}

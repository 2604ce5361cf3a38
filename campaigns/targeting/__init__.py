"""Targeting: the field registry, the condition compiler, exact counts, work tables and data
distribution."""

from campaigns.targeting.compiler import TargetingError, compile_conditions, parse_conditions
from campaigns.targeting.counts import CountResult, count, count_queryset, target_queryset
from campaigns.targeting.worktables import (
    copy_rows,
    distribute,
    drop_run,
    materialise,
    purge_work_tables,
    union_rows,
    work_table,
)


def saved_query_problems(query: object) -> dict[str, list[str]]:
    """A saved query's conditions compile for its dimension (registered as the saved
    query's check in ``CampaignsConfig.ready``)."""
    try:
        compile_conditions(query.dimension, query.conditions)  # type: ignore[attr-defined]
    except TargetingError as exc:
        return {"conditions": list(exc.messages)}
    return {}


__all__ = [
    "CountResult",
    "TargetingError",
    "compile_conditions",
    "copy_rows",
    "count",
    "count_queryset",
    "distribute",
    "drop_run",
    "materialise",
    "parse_conditions",
    "purge_work_tables",
    "saved_query_problems",
    "target_queryset",
    "union_rows",
    "work_table",
]

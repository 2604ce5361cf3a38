"""Targeting: the field registry, the condition compiler, exact counts, work tables and data
distribution."""

from campaigns.targeting.compiler import TargetingError, compile_conditions, parse_conditions
from campaigns.targeting.counts import CountResult, count, target_queryset
from campaigns.targeting.worktables import (
    copy_rows,
    distribute,
    materialise,
    purge_work_tables,
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
    "distribute",
    "materialise",
    "parse_conditions",
    "purge_work_tables",
    "saved_query_problems",
    "target_queryset",
    "work_table",
]

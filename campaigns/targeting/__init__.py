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
    "target_queryset",
    "union_rows",
    "work_table",
]

"""Copy a workflow from a parent campaign to its child (activities, transitions, settings)."""

from __future__ import annotations

from campaigns.models import Activity, Campaign, Transition


def copy_workflow(*, source: Campaign, target: Campaign) -> int:
    """Give ``target`` a copy of ``source``'s workflow; returns the activities copied. A target
    that has a workflow already keeps it (copying twice never duplicates)."""
    if target.activities.exists():
        return 0
    mapping: dict[int, Activity] = {}
    for activity in source.activities.all():
        mapping[activity.pk] = Activity.objects.create(
            campaign=target,
            key=activity.key,
            type=activity.type,
            label=activity.label,
            settings=activity.settings,
            position_x=activity.position_x,
            position_y=activity.position_y,
            local_edit=activity.local_edit,
        )
    Transition.objects.bulk_create(
        [
            Transition(
                campaign=target,
                source=mapping[item.source_id],
                target=mapping[item.target_id],
                label=item.label,
            )
            for item in source.transitions.all()
            if item.source_id in mapping and item.target_id in mapping
        ]
    )
    return len(mapping)

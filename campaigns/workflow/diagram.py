"""A read-only SVG drawing of a workflow: activities by dependency level, arrows labelled with
the branch and the population of the chosen run."""

from __future__ import annotations

from collections import defaultdict

from django.utils.html import escape, format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from campaigns.models import Campaign, WorkflowRun

BOX_W, BOX_H, GAP_X, GAP_Y, PAD = 170, 64, 90, 40, 20
# 13px semi-bold sans-serif averages under 7.5px a character: 20 fit the box's inner width.
TITLE_CHARS, TITLE_LINES = 20, 2


def title_lines(title: str) -> list[str]:
    """The box title wrapped on words into at most two lines that fit the box; what does not
    fit ends with an ellipsis (the full title is the box's tooltip)."""
    lines: list[str] = []
    current = ""
    for word in title.split():
        while len(word) > TITLE_CHARS:  # a word longer than a line is cut across lines
            if current:
                lines.append(current)
                current = ""
            lines.append(word[:TITLE_CHARS])
            word = word[TITLE_CHARS:]
        candidate = f"{current} {word}".strip()
        if len(candidate) <= TITLE_CHARS:
            current = candidate
        else:
            lines.append(current)
            current = word
    if current:
        lines.append(current)
    if len(lines) > TITLE_LINES:
        last = lines[TITLE_LINES - 1]
        lines = [*lines[: TITLE_LINES - 1], last[: TITLE_CHARS - 1].rstrip() + "…"]
    return lines or [""]


def _levels(activity_ids: list[int], edges: list[tuple[int, int]]) -> dict[int, int]:
    """Longest distance from a start for each activity (cycles are cut)."""
    level = dict.fromkeys(activity_ids, 0)
    for _ in range(len(activity_ids)):
        changed = False
        for source, target in edges:
            if level[target] < level[source] + 1 <= len(activity_ids):
                level[target] = level[source] + 1
                changed = True
        if not changed:
            break
    return level


def render(campaign: Campaign, run: WorkflowRun | None = None) -> SafeString:
    activities = list(campaign.activities.all())
    if not activities:
        return mark_safe("<p>No workflow yet.</p>")
    transitions = list(campaign.transitions.all())
    counts = dict(run.counts.values_list("transition_id", "rows")) if run else {}
    level = _levels([a.pk for a in activities], [(t.source_id, t.target_id) for t in transitions])
    columns: dict[int, list] = defaultdict(list)
    for activity in activities:
        columns[level[activity.pk]].append(activity)
    position = {}
    for column, members in columns.items():
        for row, activity in enumerate(members):
            position[activity.pk] = (
                PAD + column * (BOX_W + GAP_X),
                PAD + row * (BOX_H + GAP_Y),
            )
    # The drawing's extent, grown by every box and arrow drawn: the viewBox is computed from
    # the content, so nothing is cut off and no empty band is left below.
    right = max(x for x, _ in position.values()) + BOX_W
    bottom = max(y for _, y in position.values()) + BOX_H
    parts = []
    for item in transitions:
        x1, y1 = position[item.source_id]
        x2, y2 = position[item.target_id]
        x1, y1, x2, y2 = x1 + BOX_W, y1 + BOX_H // 2, x2, y2 + BOX_H // 2
        text = item.label if item.label != "out" else ""
        if item.pk in counts:
            text = f"{text} {counts[item.pk]:,}".strip()
        if level[item.target_id] - level[item.source_id] > 1 or y1 != y2:
            # A long or diagonal arrow bends below the boxes it would cross.
            dip = max(y1, y2) + BOX_H + GAP_Y // 2
            bottom = max(bottom, dip)
            parts.append(
                format_html(
                    '<path d="M{} {} C{} {}, {} {}, {} {}" class="wf-arrow" fill="none" '
                    'marker-end="url(#wf-head)"/><text x="{}" y="{}" class="wf-count">{}</text>',
                    x1,
                    y1,
                    x1 + GAP_X,
                    dip,
                    x2 - GAP_X,
                    dip,
                    x2 - 4,
                    y2,
                    (x1 + x2) // 2,
                    dip - 2,
                    text,
                )
            )
            continue
        parts.append(
            format_html(
                '<line x1="{}" y1="{}" x2="{}" y2="{}" class="wf-arrow" '
                'marker-end="url(#wf-head)"/><text x="{}" y="{}" class="wf-count">{}</text>',
                x1,
                y1,
                x2 - 4,
                y2,
                (x1 + x2) // 2,
                (y1 + y2) // 2 - 6,
                text,
            )
        )
    for activity in activities:
        x, y = position[activity.pk]
        title = str(activity)
        lines = format_html_join(
            "",
            '<tspan x="{}" y="{}">{}</tspan>',
            ((x + 10, y + 20 + 16 * n, line) for n, line in enumerate(title_lines(title))),
        )
        parts.append(
            format_html(
                '<g class="wf-box"><title>{}</title>'
                '<rect x="{}" y="{}" width="{}" height="{}" rx="8"/>'
                '<text class="wf-title">{}</text>'
                '<text x="{}" y="{}" class="wf-type">{}</text></g>',
                f"{title} ({activity.get_type_display()})",
                x,
                y,
                BOX_W,
                BOX_H,
                lines,
                x + 10,
                y + BOX_H - 10,
                activity.get_type_display(),
            )
        )
    style = (
        ".wf-box rect{fill:#fff;stroke:#1d4ed8;stroke-width:1.5}"
        ".wf-title{font:600 13px sans-serif;fill:#111827}"
        ".wf-type{font:12px sans-serif;fill:#6b7280}"
        ".wf-arrow{stroke:#6b7280;stroke-width:1.5}"
        ".wf-count{font:600 12px sans-serif;fill:#047857;text-anchor:middle}"
    )
    width, height = right + PAD, bottom + PAD
    header = format_html(
        '<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" viewBox="0 0 {} {}" '
        'role="img" aria-label="{}"><style>{}</style><defs><marker id="wf-head" markerWidth="10" '
        'markerHeight="8" refX="9" refY="4" orient="auto"><path d="M0,0 L10,4 L0,8 z" '
        'fill="#6b7280"/></marker></defs>',
        width, height, width, height, f"Workflow of {escape(campaign.name)}", mark_safe(style),
    )  # fmt: skip
    svg = header + "".join(parts) + "</svg>"  # every part was built with format_html
    return mark_safe(f'<div style="overflow-x:auto;max-width:100%">{svg}</div>')

"""The workflow drawing: titles fit their boxes, and the picture is exactly as big as its
content."""

import re

from campaigns.workflow import diagram
from tests.campaigns.workflow import QUERY, act, link


def _box(svg, title):
    return re.search(r"<g class=\"wf-box\"><title>" + re.escape(title) + r".*?</g>", svg).group()


def test_a_long_title_wraps_in_its_box_with_the_full_title_as_tooltip(campaign):
    query = act(campaign, "q", "query", conditions=QUERY)
    query.label = "Loyal customers who booked a weekend stay in the last twelve months"
    query.save()
    svg = str(diagram.render(campaign))
    box = _box(svg, query.label)
    lines = re.findall(r"<tspan[^>]*>([^<]*)</tspan>", box)
    assert len(lines) == 2
    assert all(len(line) <= diagram.TITLE_CHARS for line in lines)
    assert lines[0] == "Loyal customers who" and lines[1].endswith("…")


def test_a_short_title_stays_whole_on_one_line():
    assert diagram.title_lines("Build the audience") == ["Build the audience"]
    assert diagram.title_lines("A" * 45) == ["A" * 20, "A" * 19 + "…"]


def test_the_view_box_holds_every_box_and_leaves_no_empty_band(campaign):
    q = act(campaign, "q", "query", conditions=QUERY)
    wait = act(campaign, "wait", "wait", days=1)
    end = act(campaign, "end", "end")
    link(campaign, q, wait)
    link(campaign, wait, end)
    svg = str(diagram.render(campaign))
    width, height = map(int, re.search(r'viewBox="0 0 (\d+) (\d+)"', svg).groups())
    rects = [tuple(map(int, r)) for r in re.findall(
        r'<rect x="(\d+)" y="(\d+)" width="(\d+)" height="(\d+)"', svg
    )]  # fmt: skip
    right = max(x + w for x, _, w, _ in rects)
    bottom = max(y + h for _, y, _, h in rects)
    assert right + diagram.PAD == width  # the last box is inside, with its margin
    assert bottom + diagram.PAD == height  # no empty space below the boxes


def test_a_bent_arrow_below_the_boxes_is_inside_the_picture(campaign):
    q = act(campaign, "q", "query", conditions=QUERY)
    wait = act(campaign, "wait", "wait", days=1)
    end = act(campaign, "end", "end")
    link(campaign, q, wait)
    link(campaign, wait, end)
    link(campaign, q, end, label="skip")  # spans two levels: drawn as a curve below
    svg = str(diagram.render(campaign))
    height = int(re.search(r'viewBox="0 0 \d+ (\d+)"', svg).group(1))
    dips = [int(y) for y in re.findall(r"C\d+ (\d+),", svg)]
    assert dips and max(dips) < height

"""Template budgets: a template that would hang a thread or fill the memory is refused at
save within 2 s with its reason (compiling included), and at send a render over budget fails
that one message with the reason while the others of the chunk are sent."""

import time
import tracemalloc

import pytest
from django.core.exceptions import ValidationError

from campaigns.delivery import rendering, sending
from campaigns.models import Delivery, Message
from tests.campaigns.test_sending import people, prepared, send  # noqa: F401 (fixture)

CONTEXT = rendering.sample_context(multi_level=False, perso={})
NESTED_RANGES = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
TEN = "{% set l = [0,1,2,3,4,5,6,7,8,9] %}"
DEEP_LOOPS = TEN + "{% for a in l %}" * 6 + "{{ a }}" + "{% endfor %}" * 6


def refused_in_time(source, *, html=False):
    """The problems validation finds, asserting it answered within 2 s."""
    started = time.monotonic()
    problems = rendering.validate_template(source, html=html, context=CONTEXT)
    assert time.monotonic() - started < 2, problems
    return problems


def test_nested_range_loops_are_refused_at_save_within_two_seconds(campaign):
    delivery = Delivery(campaign=campaign, label="Hang", channel="email", subject="Hi",
                        text_body=NESTED_RANGES)  # fmt: skip
    started = time.monotonic()
    with pytest.raises(ValidationError) as caught:
        delivery.clean()
    assert time.monotonic() - started < 2
    assert caught.value.message_dict["text_body"] == [
        "over budget: the loops run more than 100,000 times in all"
    ]


def test_a_billion_character_string_is_refused_at_save_without_building_it(campaign):
    delivery = Delivery(campaign=campaign, label="Big", channel="email",
                        subject="{{ 'x' * 10**9 }}", text_body="Hi")  # fmt: skip
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(ValidationError) as caught:
            delivery.clean()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.monotonic() - started < 2
    assert peak < 50 * 2**20  # neither the compiler nor the render built it
    assert (
        "string repetition would make 1,000,000,000 characters"
        in (caught.value.message_dict["subject"][0])
    )


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("{{ [1, 2] * 10**9 }}", "list repetition would make 2,000,000,000 items"),
        ("{{ 7 ** (10**9) }}", "is too large a number"),
        ("{{ (10**2000) * (10**2000) }}", "multiplication of numbers that large"),
        (DEEP_LOOPS, "the loops run more than 100,000 times in all"),
        (
            "{% for i in range(99999) %}<p>{{ contact.first_name }} and some text</p>{% endfor %}",
            "the output is longer than 1,000,000 characters",
        ),
        (
            "{% set x %}{% for i in range(99999) %}0123456789abcdef{% endfor %}{% endset %}",
            "the output is longer than 1,000,000 characters",
        ),
        (
            "{% for i in range(99999) %}{% with %}{% if 1 %}0123456789abcdef{% endif %}"
            "{% endwith %}{% endfor %}",
            "the output is longer than 1,000,000 characters",
        ),
        (
            "{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}"
            "{% endfor %}",
            "~ would make 1,048,576 characters",
        ),
        (
            "{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}"
            "{% endfor %}",
            "a string addition would make 1,048,576 characters",
        ),
        ("{{ 'x'|center(10**9) }}", "the center filter would make 1,000,000,000"),
        ("{{ 'x'.ljust(10**9) }}", "ljust() would make 1,000,000,000"),
        ("{{ '%999999999s' % 'x' }}", "a % format width would make 999,999,999"),
        ("{{ '{:>999999999}'.format('x') }}", "a format width would make 999,999,999"),
        ("{{ ('x' * 1000)|replace('x', 'x' * 2000) }}", "replace() would make 2,000,000"),
        ("{{ range(100001)|list }}", "range() would make 100,001 items"),
        ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "calls itself too deeply"),
        ("{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}", "nested too deeply"),
    ],
    ids=[
        "list*",
        "pow",
        "int*int",
        "deep-loops",
        "output",
        "set-block",
        "with-in-loop",
        "concat",
        "plus",
        "center",
        "ljust",
        "percent",
        "format",
        "replace",
        "range",
        "recursion",
        "parens",
    ],
)
def test_a_template_over_budget_is_refused_at_save_within_two_seconds(source, reason):
    problems = refused_in_time(source)
    assert problems and problems[0].startswith("over budget:") and reason in problems[0], problems


def test_compiling_is_bounded_by_the_time_budget(settings):
    settings.DELIVERY_TEMPLATE_RENDER_MS = 300
    problems = refused_in_time("{{ contact.first_name }}" * 40000)  # seconds to compile
    assert problems == [
        "over budget: rendering takes longer than 0.3 s (the limit for one message)"
    ]


def test_recursive_loops_blocks_and_list_mutation_are_refused():
    assert refused_in_time("{% for i in [1] recursive %}{{ loop([1]) }}{% endfor %}") == [
        "line 1: recursive loops are not allowed"
    ]
    # A block inside a loop would repeat its text where the budget does not see it.
    assert refused_in_time("{% for i in range(9) %}{% block b %}x{% endblock %}{% endfor %}") == [
        "line 1: {% block %} is not allowed in a message"
    ]
    problems = refused_in_time("{% set l = [1] %}{% for i in range(30) %}{{ l.extend(l) }}"
                               "{% endfor %}")  # fmt: skip
    assert problems[0].startswith("not allowed:")


def test_ordinary_templates_are_within_budget_and_render_as_before():
    source = (
        "{% for i in range(3) %}{{ loop.index }}/{{ loop.length }}{% if loop.last %}!"
        "{% endif %} {% endfor %}{{ '%.2f' % 3.14159 }} {{ '{:,}'.format(2000000) }} "
        "{{ 10 ** 9 }} {{ 'ab' ~ 'cd' }} {{ ['a', 'b']|join('-') }} {{ '<b>' }}"
    )
    assert refused_in_time(source, html=True) == []
    html = rendering.render(source, html=True, context=CONTEXT)
    assert html == "1/3 2/3 3/3! 3.14 2,000,000 1000000000 abcd a-b &lt;b&gt;"


def test_the_budget_settings_apply(settings):
    settings.DELIVERY_TEMPLATE_MAX_ITERATIONS = 10
    assert refused_in_time("{% for i in range(11) %}{% endfor %}")[0] == (
        "over budget: range() would make 11 items (the limit is 10)"
    )
    assert refused_in_time("{% for i in [1,2,3] %}{% for j in [1,2,3,4] %}{% endfor %}"
                           "{% endfor %}")[0].endswith("more than 10 times in all")  # fmt: skip
    settings.DELIVERY_TEMPLATE_MAX_CHARS = 1000
    assert "longer than 1,000 characters" in refused_in_time("{{ 'x' * 999 }}{{ 'y' * 999 }}")[0]


def test_the_fields_of_a_delivery_share_one_budget_at_save(settings):
    from campaigns.delivery.services import content_problems

    settings.DELIVERY_TEMPLATE_MAX_ITERATIONS = 100
    loop = "{% for i in range(60) %}{% endfor %}"
    problems = content_problems(channel="email", fields={"subject": loop, "text_body": loop},
                                multi_level=False, perso={})  # fmt: skip
    # Each field alone is within budget; together, as one message renders them at send, not.
    assert list(problems) == ["text_body"] and "more than 100 times" in problems["text_body"][0]


# At send --------------------------------------------------------------------------------------


@pytest.mark.usefixtures("people")
def test_a_message_over_budget_at_send_fails_with_its_reason_and_the_others_are_sent(
    campaign, org, django_capture_on_commit_callbacks, mailoutbox
):
    # Within budget with the sample recipient at save; one recipient's data is not.
    delivery = prepared(campaign, html_body="", text_body="Hi {{ 'x' * (data.n or 1) }}")
    greedy = Message.objects.filter(delivery=delivery).order_by("id")[2]
    Message.objects.filter(pk=greedy.pk).update(data={"n": 10**9})
    started = time.monotonic()
    delivery = send(delivery, org, django_capture_on_commit_callbacks)
    assert time.monotonic() - started < 5
    greedy.refresh_from_db()
    assert greedy.status == "failed"
    assert greedy.error == (
        "Cannot render: a string repetition would make 1,000,000,000 characters "
        "(the limit is 1,000,000)"
    )
    assert len(mailoutbox) == 5
    assert {m.body.split("\n\n-- \n")[0] for m in mailoutbox} == {"Hi x"}
    assert Message.objects.filter(delivery=delivery, status="sent").count() == 5


def test_a_render_over_its_time_budget_at_send_is_one_of_the_render_errors(campaign, settings):
    settings.DELIVERY_TEMPLATE_RENDER_MS = 50
    delivery = Delivery(campaign=campaign, label="Slow", channel="sms",
                        text_body="{% for i in range(data.n) %}{% for j in range(data.n) %}"
                                  "{{ i * j % 7 }}{% endfor %}{% endfor %}")  # fmt: skip
    renderer = sending.Renderer(delivery)
    recipient = {"id": 1, "address": "+331", "secondary_id": 0, "data": {"n": 300},
                 "contact": {}, "entity": {}}  # fmt: skip
    started = time.monotonic()
    with pytest.raises(sending.RENDER_ERRORS) as caught:
        renderer.render(recipient)
    assert time.monotonic() - started < 1
    assert "longer than 0.05 s" in str(caught.value)
    recipient["data"] = {"n": 3}
    assert renderer.render(recipient).text == "000012024"  # the renderer goes on with the next

"""Helpers to build and run small workflows in tests."""

from campaigns import targeting
from campaigns.models import Activity, Transition
from campaigns.workflow import engine
from campaigns.workflow.activities import output_table

QUERY = {"field": "email_consent", "op": "eq", "value": True}
FRENCH = {"field": "language", "op": "eq", "value": "fr"}


def act(campaign, key, type_, **settings):
    return Activity.objects.create(campaign=campaign, key=key, type=type_, settings=settings)


def link(campaign, source, target, label="out"):
    return Transition.objects.create(campaign=campaign, source=source, target=target, label=label)


def contacts_of(run, activity, label="out"):
    rows = targeting.work_table(run.run_key, output_table(activity, label))
    return set(rows.values_list("contact__external_id", flat=True))


def simulate(campaign, org, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        run = engine.start_run(campaign=campaign, actor=org.marketer, simulate=True)
    run.refresh_from_db()
    return run

"""Audience data: contacts and the secondary tables campaigns target across relations, plus
work tables (populations persisted between workflow steps) and saved queries."""

from __future__ import annotations

from collections import OrderedDict

from django.apps import apps
from django.conf import settings
from django.db import connection, models, transaction
from django.db.models import Q
from django.db.models.functions import Upper
from django.utils import timezone
from django_fsm import FSMField, FSMModelMixin, transition

from campaigns.choices import (
    BookingStatus,
    Channel,
    Dimension,
    ImportKind,
    ImportState,
    SubscriptionStatus,
)
from campaigns.models import checks
from portal.models import Entity, EntityOwnedQuerySet


class ContactQuerySet(EntityOwnedQuerySet):
    pass


class Contact(models.Model):
    """A person campaigns address, owned by a local entity."""

    external_id = models.CharField(max_length=64, unique=True)
    first_name = models.CharField(max_length=100, blank=True)
    last_name = models.CharField(max_length=100, blank=True)
    email = models.EmailField(blank=True)
    phone = models.CharField(max_length=32, blank=True)
    push_token = models.CharField(max_length=255, blank=True)
    language = models.CharField(max_length=8, default="en")
    birth_date = models.DateField(null=True, blank=True, db_index=True)
    # (entity, blocklisted) below serves every lookup by entity: no index of its own
    entity = models.ForeignKey(
        Entity, on_delete=models.PROTECT, related_name="contacts", db_index=False
    )
    email_consent = models.BooleanField(default=False)
    email_consent_at = models.DateTimeField(null=True, blank=True)
    email_consent_source = models.CharField(max_length=50, blank=True)
    sms_consent = models.BooleanField(default=False)
    sms_consent_at = models.DateTimeField(null=True, blank=True)
    sms_consent_source = models.CharField(max_length=50, blank=True)
    push_consent = models.BooleanField(default=False)
    push_consent_at = models.DateTimeField(null=True, blank=True)
    push_consent_source = models.CharField(max_length=50, blank=True)
    blocklisted = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ContactQuerySet.as_manager()

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["entity", "blocklisted"]),
            models.Index(fields=["last_name", "first_name"]),
            # Exact lookups (quarantine and unsubscribe by address, conditions). Declared here
            # rather than with db_index=True, which on PostgreSQL adds a second, LIKE-prefix
            # (varchar_pattern_ops) index that no query of the product uses. Boolean columns
            # (consent, blocklist) get no index of their own: every query reaches them through
            # a contact id or the entity (entity, blocklisted), never by the flag alone.
            models.Index(fields=["email"], name="contact_email_idx"),
            models.Index(fields=["phone"], name="contact_phone_idx"),
            models.Index(fields=["language"], name="contact_language_idx"),
            # Text conditions compare case-insensitively (UPPER(x) = UPPER(value)): these
            # give the planner an index and statistics for them.
            models.Index(Upper("email"), name="contact_email_ci"),
        ]

    def __str__(self) -> str:
        name = f"{self.first_name} {self.last_name}".strip()
        return f"{name or self.external_id} ({self.external_id})"

    @property
    def owning_entity(self) -> Entity:
        return self.entity


class CategoryOptOut(models.Model):
    """A contact who asked not to receive a category of messages (the categories pressure
    rules use), on any channel: the consent rule excludes them from deliveries of it."""

    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="opt_outs")
    category = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["category"]
        constraints = [models.UniqueConstraint(fields=["contact", "category"], name="opt_out_once")]
        indexes = [models.Index(fields=["category", "contact"])]

    def __str__(self) -> str:
        return f"{self.contact_id}: no {self.category}"


class Quarantine(models.Model):
    """An address that bounced or was refused: deliveries skip it."""

    channel = models.CharField(max_length=16, choices=Channel.choices)
    address = models.CharField(max_length=255)
    reason = models.CharField(max_length=255)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["channel", "address"], name="quarantine_unique_address")
        ]

    def __str__(self) -> str:
        return f"{self.channel}: {self.address}"


class Store(models.Model):
    """A point of sale belonging to a local entity."""

    code = models.CharField(max_length=40, unique=True)
    name = models.CharField(max_length=200)
    city = models.CharField(max_length=100, blank=True, db_index=True)
    entity = models.ForeignKey(Entity, on_delete=models.PROTECT, related_name="stores")

    objects = EntityOwnedQuerySet.as_manager()

    class Meta:
        ordering = ["code"]

    def __str__(self) -> str:
        return f"{self.name} ({self.code})"

    @property
    def owning_entity(self) -> Entity:
        return self.entity


class BookingQuerySet(EntityOwnedQuerySet):
    entity_path = "contact__entity"


class Booking(models.Model):
    """A contact's booking (a secondary record a delivery may address one message per)."""

    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="bookings")
    store = models.ForeignKey(
        Store, null=True, blank=True, on_delete=models.SET_NULL, related_name="bookings"
    )
    reference = models.CharField(max_length=64, unique=True)
    product = models.CharField(max_length=100, db_index=True)
    destination = models.CharField(max_length=100, blank=True, db_index=True)
    booking_date = models.DateField(db_index=True)
    amount = models.DecimalField(max_digits=12, decimal_places=2, default=0)
    status = models.CharField(
        max_length=16, choices=BookingStatus.choices, default=BookingStatus.CONFIRMED
    )

    objects = BookingQuerySet.as_manager()

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["contact", "booking_date"]),
            models.Index(fields=["status", "booking_date"]),
            models.Index(Upper("product"), name="booking_product_ci"),
            models.Index(Upper("destination"), name="booking_destination_ci"),
        ]

    def __str__(self) -> str:
        return self.reference

    @property
    def owning_entity(self) -> Entity:
        return self.contact.entity


class Subscription(models.Model):
    """A contact's subscription to a product."""

    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="subscriptions")
    product = models.CharField(max_length=100, db_index=True)
    start_date = models.DateField(db_index=True)
    end_date = models.DateField(null=True, blank=True, db_index=True)
    status = models.CharField(
        max_length=16, choices=SubscriptionStatus.choices, default=SubscriptionStatus.ACTIVE
    )

    objects = BookingQuerySet.as_manager()

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["contact", "status"])]

    def __str__(self) -> str:
        return f"{self.product} ({self.status})"


class WorkTable(models.Model):
    """The registry of per-step work tables: one row per table (run, step), so that purge,
    retention and re-runs DROP tables instead of deleting rows.

    The table itself (``wt_<id>``: named from this row's id only, never from user text) is
    created by ``CREATE [UNLOGGED] TABLE … AS SELECT`` and read back through
    ``campaigns.targeting.worktables`` (``queryset()``, ``contact_ids()``, ``count()``,
    ``drop()``).
    """

    run_key = models.CharField(max_length=64, help_text="The run (e.g. run-12, delivery-3).")
    name = models.CharField(max_length=64, help_text="The step's output within the run.")
    rows = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["run_key", "name"], name="work_table_one_per_step")
        ]

    def __str__(self) -> str:
        return f"{self.run_key}/{self.name}: {self.table_name}"

    @property
    def table_name(self) -> str:
        return f"wt_{int(self.pk)}"

    # The small interface steps read a table through (campaigns.targeting.worktables).
    def queryset(self) -> models.QuerySet:
        """The table's rows (id, contact, secondary_id, entity, data) as a queryset."""
        return rows_of(self)

    def contact_ids(self) -> models.QuerySet:
        return self.queryset().values("contact_id")

    def count(self) -> int:
        """The rows written (recorded at creation: no COUNT(*))."""
        return self.rows

    def ensure_index(self, column: str) -> None:
        ensure_index(self, column)

    def drop(self) -> None:
        """DROP TABLE IF EXISTS, and this registry row with it."""
        drop(self)


# The storage of the per-step tables (campaigns.targeting.worktables writes them).
# The columns of every work table, in order (see the module docstring).
COLUMNS = ("id", "contact_id", "secondary_id", "entity_id", "data")
# Columns a consumer may ask an index on.
INDEXABLE = frozenset({"id", "contact_id", "entity_id"})
# Row models kept per process (an unused one is unregistered when the cache is full).
MODEL_CACHE_SIZE = 256
_models: OrderedDict[str, type[models.Model]] = OrderedDict()


def _row_model(table: str) -> type[models.Model]:
    """The unmanaged model reading the work table ``table`` (cached per process)."""
    model = _models.get(table)
    if model is not None:
        _models.move_to_end(table)
        return model
    meta = type("Meta", (), {"managed": False, "db_table": table, "app_label": "campaigns"})
    model = type(
        f"WorkTableRows_{table}",
        (models.Model,),
        {
            "__module__": __name__,
            "Meta": meta,
            "id": models.BigIntegerField(primary_key=True),
            "contact": models.ForeignKey(
                Contact, on_delete=models.DO_NOTHING, related_name="+", db_constraint=False
            ),
            "secondary_id": models.BigIntegerField(null=True),
            "entity": models.ForeignKey(
                Entity,
                null=True,
                on_delete=models.DO_NOTHING,
                related_name="+",
                db_constraint=False,
            ),
            "data": models.JSONField(null=True),
        },
    )
    _models[table] = model
    while len(_models) > MODEL_CACHE_SIZE:
        _forget(next(iter(_models)))
    return model


def _forget(table: str) -> None:
    """Unregister the row model of a dropped (or evicted) table."""
    model = _models.pop(table, None)
    if model is not None:
        apps.all_models["campaigns"].pop(model._meta.model_name, None)
        apps.clear_cache()


def ensure_index(entry: WorkTable, column: str) -> None:
    """``CREATE INDEX IF NOT EXISTS`` on one column of a work table, when a consumer needs
    it (the index name, too, comes from the registry id)."""
    if column not in INDEXABLE:
        raise ValueError(f"Work tables are indexed on {', '.join(sorted(INDEXABLE))}.")
    quote = connection.ops.quote_name
    table = entry.table_name
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE INDEX IF NOT EXISTS {quote(f'{table}_{column}')} "
            f"ON {quote(table)} ({quote(column)})"
        )


def drop(entry: WorkTable) -> None:
    """DROP the table (if it exists) and delete its registry row."""
    table = entry.table_name
    with transaction.atomic(savepoint=False), connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {connection.ops.quote_name(table)}")
        if entry.pk is not None:
            WorkTable.objects.filter(pk=entry.pk).delete()
    transaction.on_commit(lambda: _forget(table))


def rows_of(entry: WorkTable) -> models.QuerySet:
    return _row_model(entry.table_name).objects.all()


class SavedQuery(models.Model):
    """A named condition tree on a target dimension (the admin and portal query builder)."""

    name = models.CharField(max_length=200)
    entity = models.ForeignKey(Entity, on_delete=models.PROTECT, related_name="saved_queries")
    dimension = models.CharField(
        max_length=16, choices=Dimension.choices, default=Dimension.CONTACT
    )
    conditions = models.JSONField(
        default=dict, blank=True, help_text="A condition tree (see the targeting documentation)."
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    last_count = models.PositiveIntegerField(null=True, blank=True)
    last_counted_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = EntityOwnedQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "saved queries"

    def __str__(self) -> str:
        return self.name

    @property
    def owning_entity(self) -> Entity:
        return self.entity

    def clean(self) -> None:
        """The conditions compile: the rules are ``campaigns.targeting``'s (registered in
        ``checks``)."""
        checks.run(self)


def import_upload_to(instance: ImportJob, filename: str) -> str:
    return f"imports/{instance.kind}/{filename}"


class ImportJob(FSMModelMixin, models.Model):
    """An import of contacts or secondary data from a CSV/XLSX file, run by a worker."""

    kind = models.CharField(max_length=16, choices=ImportKind.choices)
    file = models.FileField(upload_to=import_upload_to)
    entity = models.ForeignKey(
        Entity,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="Rows are imported for this entity only (required for local operators).",
    )
    dry_run = models.BooleanField(
        default=True, help_text="Only check the file and report what would happen."
    )
    import_valid_rows = models.BooleanField(
        default=False, help_text="Import the valid rows even when some rows have errors."
    )
    state = FSMField(
        max_length=16, choices=ImportState.choices, default=ImportState.QUEUED, protected=True
    )
    total_rows = models.PositiveIntegerField(default=0)
    processed_rows = models.PositiveIntegerField(default=0)
    new_rows = models.PositiveIntegerField(default=0)
    updated_rows = models.PositiveIntegerField(default=0)
    skipped_rows = models.PositiveIntegerField(default=0)
    error_rows = models.PositiveIntegerField(default=0)
    checked_at = models.DateTimeField(
        null=True, blank=True, help_text="When every row had been checked (the write may start)."
    )
    rows_to_write = models.PositiveIntegerField(default=0)
    written_rows = models.PositiveIntegerField(
        default=0,
        help_text="Rows written so far, committed with each chunk; a new worker resumes here.",
    )
    heartbeat_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="The running worker's last sign of life (its lease: IMPORT_LEASE_SECONDS).",
    )
    worker_session = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="The database session (PostgreSQL backend pid) holding the job's staging "
        "tables and its write transaction; ended by the recovery when the worker is lost.",
    )
    message = models.TextField(blank=True)
    error_report = models.FileField(upload_to="imports/reports/", blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = EntityOwnedQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(processed_rows__lte=models.F("total_rows")) | Q(total_rows=0),
                name="import_progress_bounded",
            ),
            models.CheckConstraint(
                condition=Q(written_rows__lte=models.F("rows_to_write")),
                name="import_write_progress_bounded",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} import #{self.pk}"

    @property
    def owning_entity(self) -> Entity | None:
        return self.entity

    @transition(field=state, source=ImportState.QUEUED, target=ImportState.RUNNING)
    def start(self) -> None:
        """A worker took the job."""

    @transition(field=state, source=ImportState.RUNNING, target=ImportState.DONE)
    def finish(self) -> None:
        self.finished_at = timezone.now()

    @transition(
        field=state, source=[ImportState.QUEUED, ImportState.RUNNING], target=ImportState.FAILED
    )
    def fail(self, *, message: str) -> None:
        self.message = message
        self.finished_at = timezone.now()

    @property
    def progress(self) -> int:
        return int(100 * self.processed_rows / self.total_rows) if self.total_rows else 0

    @property
    def write_progress(self) -> int:
        return int(100 * self.written_rows / self.rows_to_write) if self.rows_to_write else 0

import pytest
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from portal import services
from portal.choices import EntityKind, Role
from portal.models import Entity, Membership
from tests.factories import EntityFactory, MembershipFactory, UserFactory


def codes(queryset):
    return set(queryset.values_list("code", flat=True))


def test_paths_follow_the_tree(org):
    assert org.store_a.path == "/HQ/NORTH/STORE_A/"
    assert codes(org.north.descendants()) == {"NORTH", "STORE_A"}
    assert codes(org.store_a.ancestors()) == {"HQ", "NORTH", "STORE_A"}


def test_local_operator_sees_only_its_entity(org):
    assert codes(Entity.objects.visible_to(org.operator_a)) == {"STORE_A"}


def test_region_operator_sees_its_local_entities(org):
    assert codes(Entity.objects.visible_to(org.regional)) == {"NORTH", "STORE_A"}


def test_central_operators_see_every_entity(org):
    assert codes(Entity.objects.visible_to(org.marketer)) == codes(Entity.objects.all())


def test_outsiders_and_anonymous_see_nothing(org):
    assert not Entity.objects.visible_to(org.outsider).exists()
    assert not Entity.objects.visible_to(AnonymousUser()).exists()


def test_an_inactive_user_sees_nothing(org):
    org.operator_a.is_active = False
    org.operator_a.save()
    assert not Entity.objects.visible_to(org.operator_a).exists()


def test_each_entity_has_its_own_group(org):
    assert org.store_a.group.name == "entity:STORE_A"
    assert org.operator_a.groups.filter(name="entity:STORE_A").exists()
    assert org.operator_a.groups.filter(name="role:local_operator").exists()


def test_role_groups_carry_model_permissions(org):
    assert org.marketer.has_perm("portal.resend_notification")
    assert not org.operator_a.has_perm("portal.resend_notification")


def test_central_members_get_admin_access(org):
    assert org.marketer.is_staff
    assert not org.operator_a.is_staff


def test_removing_a_membership_removes_the_rights(org):
    Membership.objects.filter(user=org.operator_a).delete()
    org.operator_a.refresh_from_db()
    assert not Entity.objects.visible_to(org.operator_a).exists()
    assert not org.operator_a.groups.exists()


def test_moving_an_entity_moves_its_subtree_and_rights(org):
    EntityFactory(code="STORE_A2", parent=org.north)
    org.north.parent = org.hq  # unchanged parent, path stays
    org.north.save()
    new_region = EntityFactory(code="EAST", kind=EntityKind.REGION, parent=org.hq)
    store = Entity.objects.get(code="STORE_A")
    store.parent = new_region
    store.save()
    store.refresh_from_db()
    assert store.path == "/HQ/EAST/STORE_A/"
    assert "STORE_A" not in codes(Entity.objects.visible_to(org.regional))
    assert "STORE_A" in codes(Entity.objects.visible_to(org.operator_a))


def test_moving_a_region_rewrites_descendant_paths(org):
    west = EntityFactory(code="WEST", kind=EntityKind.REGION, parent=org.hq)
    org.north.parent = west
    org.north.save()
    assert Entity.objects.get(code="STORE_A").path == "/HQ/WEST/NORTH/STORE_A/"


def test_there_is_one_central_entity(org):
    with pytest.raises(ValidationError, match="already a central entity"):
        Entity(code="HQ2", name="Other", kind=EntityKind.CENTRAL).full_clean()
    with pytest.raises(IntegrityError), transaction.atomic():
        Entity.objects.create(code="HQ2", name="Other", kind=EntityKind.CENTRAL)


@pytest.mark.parametrize(
    ("kind", "parent_code", "field", "message"),
    [
        (EntityKind.LOCAL, None, "parent", "need a parent"),
        (EntityKind.LOCAL, "STORE_A", "parent", "cannot have children"),
    ],
)
def test_tree_rules_are_validated(org, kind, parent_code, field, message):
    parent = Entity.objects.get(code=parent_code) if parent_code else None
    with pytest.raises(ValidationError) as excinfo:
        Entity(code="NEW", name="New", kind=kind, parent=parent).full_clean()
    assert message in " ".join(excinfo.value.message_dict[field])


def test_an_entity_cannot_move_under_its_own_descendant(org):
    org.north.parent = org.store_a
    with pytest.raises(ValidationError):
        org.north.full_clean()


def test_entity_codes_are_immutable(org):
    org.store_a.code = "RENAMED"
    with pytest.raises(ValidationError, match="cannot change"):
        org.store_a.full_clean()


def test_roles_must_fit_the_entity(org):
    with pytest.raises(ValidationError, match="Central roles"):
        Membership(user=org.outsider, entity=org.store_a, role=Role.CENTRAL_MARKETER).full_clean()
    with pytest.raises(ValidationError, match="Local roles"):
        Membership(user=org.outsider, entity=org.hq, role=Role.LOCAL_OPERATOR).full_clean()


def test_add_membership_is_idempotent_and_audited(org):
    user = UserFactory(username="newbie")
    first = services.add_membership(user=user, entity=org.store_b, role=Role.LOCAL_OPERATOR)
    second = services.add_membership(user=user, entity=org.store_b, role=Role.LOCAL_OPERATOR)
    assert first.pk == second.pk
    assert codes(Entity.objects.visible_to(user)) == {"STORE_B"}
    from portal.models import AuditLog

    assert AuditLog.objects.for_object(org.store_b).filter(action="add_membership").count() == 1


def test_users_with_role(org):
    MembershipFactory(
        user=UserFactory(username="gone", is_active=False),
        entity=org.hq,
        role=Role.CENTRAL_APPROVER,
    )
    approvers = services.users_with_role(entity=org.hq, roles=[Role.CENTRAL_APPROVER])
    assert list(approvers) == [org.approver]

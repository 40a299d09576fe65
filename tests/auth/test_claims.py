"""Groups from claims: the IdP's order, Keycloak roles, EGI entitlements, the primary group."""

import pytest

from apex_hub.auth.claims import claim_value, collect_groups, parse_entitlement, primary_group

EGI = "urn:mace:egi.eu:group:vo.example.org:role=member#aai.egi.eu"


@pytest.mark.parametrize(
    "urn, expected",
    [
        (EGI, ("vo.example.org", "vo.example.org", "member", "aai.egi.eu")),
        (
            "urn:mace:egi.eu:group:vo.example.org:sub:deeper:role=vm_operator#aai.egi.eu",
            ("vo.example.org", "vo.example.org:sub:deeper", "vm_operator", "aai.egi.eu"),
        ),
        (
            "urn:mace:egi.eu:group:vo.example.org#aai.egi.eu",
            ("vo.example.org", "vo.example.org", "member", "aai.egi.eu"),
        ),
        ("urn:geant:example.org:group:apex:role=owner", ("apex", "apex", "owner", "")),
    ],
)
def test_entitlements_are_parsed(urn, expected):
    ent = parse_entitlement(urn)
    assert (ent.vo, ent.group, ent.role, ent.authority) == expected


@pytest.mark.parametrize(
    "urn", ["", "apex", "urn:mace:egi.eu:res:vo.example.org", 42, None, "urn:mace:egi.eu:group:#aai.egi.eu"]
)
def test_other_values_are_not_entitlements(urn):
    assert parse_entitlement(urn) is None


def test_groups_keep_the_idp_order_across_claims_and_drop_repeats():
    claims = {
        "groups": ["/b-team", "a-team", "b-team"],
        "realm_access": {"roles": ["offline_access", "a-team"]},
        "resource_access": {"apex-hub": {"roles": ["gpu"]}},
        "eduperson_entitlement": [
            EGI,
            "urn:mace:egi.eu:group:vo.other.org:role=vm_operator#aai.egi.eu",
            "urn:mace:egi.eu:group:vo.example.org:sub:role=member#aai.egi.eu",
        ],
    }
    groups = collect_groups(
        claims, ["groups", "realm_access.roles", "resource_access.apex-hub.roles"], ["eduperson_entitlement"]
    )
    assert groups == ["b-team", "a-team", "offline_access", "gpu", "vo.example.org", "vo.example.org:sub"]


def test_entitlement_roles_and_template():
    claims = {
        "eduperson_entitlement": [EGI, "urn:mace:egi.eu:group:vo.other.org:role=vm_operator#aai.egi.eu"]
    }
    assert collect_groups(claims, [], ["eduperson_entitlement"], ["*"], "{group}:{role}") == [
        "vo.example.org:member",
        "vo.other.org:vm_operator",
    ]


def test_odd_claim_shapes_give_no_groups():
    claims = {"groups": "single", "roles": {"not": "a list"}, "n": 3, "https://example.org/groups": ["x"]}
    assert collect_groups(claims, ["groups", "roles", "n", "missing.path", "https://example.org/groups"]) == [
        "single",
        "x",
    ]
    assert claim_value({"a": {"b": [1]}}, "a.b") == [1]
    assert claim_value({"a": "x"}, "a.b") is None


def test_primary_group_is_the_first_allowed_one():
    groups = ["students", "apex-small", "apex-large"]
    assert primary_group(groups) == "students"
    assert primary_group(groups, allowed={"apex-large", "apex-small"}) == "apex-small"
    assert primary_group(groups, allowed={"nobody"}) is None
    assert primary_group([], allowed=set()) is None

"""Issue 13.4/13.5 (spawner side): the user namespace's NetworkPolicy blocks the cloud metadata
endpoint without a privileged init container and works on CNIs that ignore pod IP ranges."""

from __future__ import annotations

import pytest
from traitlets import TraitError

from apex_hub.spawner.workspace import NETWORK_POLICY
from tests.helpers.spawner import make_spawner, obj

HUB_PEER = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "jhub"}},
    "podSelector": {"matchLabels": {"hub.jupyter.org/network-access-singleuser": "true"}},
}
OWN = {"podSelector": {}}
DNS = {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}


async def policy_of(ksim, user, **traits):
    spawner = make_spawner(ksim, user, **traits)
    await spawner.start()
    policy = obj(ksim, "networkpolicies", spawner.namespace, NETWORK_POLICY, "networking.k8s.io")
    init = obj(ksim, "pods", spawner.namespace, spawner.pod_name)["spec"].get("initContainers") or []
    await spawner.stop()
    return policy["spec"], init


async def test_default_policy_admits_hub_and_proxy_and_blocks_the_metadata_endpoint(ksim):
    spec, init = await policy_of(ksim, "nora")
    assert spec == {
        "podSelector": {},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [{"from": [HUB_PEER, OWN]}],
        "egress": [
            DNS,
            {"to": [HUB_PEER, OWN]},
            {"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.169.254/32"]}}]},
        ],
    }
    # selectors only: no private-IP ipBlock for cluster traffic (Cilium ignores those for pods)
    assert all("ipBlock" not in peer for rule in spec["ingress"] for peer in rule["from"])
    assert not init  # and no privileged iptables init container is needed


async def test_egress_options(ksim):
    spec, _ = await policy_of(
        ksim,
        "omar",
        egress_allowed_cidrs=["0.0.0.0/0", "::/0"],
        egress_blocked_cidrs=["169.254.169.254/32", "10.0.0.0/8", "fd00:ec2::254/128"],
    )
    assert spec["egress"][2] == {
        "to": [
            {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.169.254/32", "10.0.0.0/8"]}},
            {"ipBlock": {"cidr": "::/0", "except": ["fd00:ec2::254/128"]}},
        ]
    }
    spec, _ = await policy_of(ksim, "pia", egress_allowed_cidrs=[])
    assert spec["egress"] == [DNS, {"to": [HUB_PEER, OWN]}]  # no internet at all
    spec, _ = await policy_of(ksim, "quin", network_policy_egress=False)
    assert spec["policyTypes"] == ["Ingress"] and "egress" not in spec


def test_a_bad_cidr_is_a_clear_configuration_error(ksim):
    with pytest.raises(TraitError, match=r"egress_blocked_cidrs: '169.254.169.254/33' is not a CIDR"):
        make_spawner(ksim, "rob", egress_blocked_cidrs=["169.254.169.254/33"])

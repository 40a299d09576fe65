"""Issue 14.3 at spawn: the pod as sent is checked, whichever setting (profile, operator, chart)
put a weaker container in it; issue 13.4: the chart's privileged metadata blocker is refused."""

from __future__ import annotations

import copy

import pytest
from tornado.web import HTTPError

from tests.helpers.spawner import CATALOGUE, make_spawner, obj, objects

#: What Z2JH 4.4 adds with singleuser.cloudMetadata.blockWithIptables: true (the default).
CHART_METADATA_BLOCKER = {
    "name": "block-cloud-metadata",
    "image": "quay.io/jupyterhub/k8s-network-tools:4.4.0",
    "command": [
        "iptables",
        "--append",
        "OUTPUT",
        "--protocol",
        "tcp",
        "--destination",
        "169.254.169.254",
        "--destination-port",
        "80",
        "--jump",
        "DROP",
    ],
    "securityContext": {"runAsUser": 0, "privileged": True, "capabilities": {"add": ["NET_ADMIN"]}},
}


async def test_the_charts_privileged_init_container_is_refused_with_a_hint(ksim, caplog):
    spawner = make_spawner(ksim, "gina", init_containers=[CHART_METADATA_BLOCKER])
    with pytest.raises(HTTPError) as e:
        await spawner.start()
    assert e.value.status_code == 500
    message = e.value.log_message
    assert "Profile 'lab' cannot be started: its pod would weaken workspace isolation" in message
    assert "init container 'block-cloud-metadata' is privileged" in message
    assert "runs as root (runAsUser 0)" in message and "adds capabilities NET_ADMIN" in message
    assert "singleuser.cloudMetadata.blockWithIptables: false" in caplog.text
    assert not objects(ksim, "pods", "apex-gina")
    await spawner.stop()


@pytest.mark.parametrize(
    "extra, words",
    [
        ({"extra_pod_config": {"hostNetwork": True}}, "the pod sets hostNetwork"),
        (
            {"extra_container_config": {"ports": [{"containerPort": 8888, "hostPort": 8888}]}},
            "publishes host port 8888",
        ),
        ({"privileged": True}, "container 'notebook' is privileged"),
    ],
)
async def test_operator_traits_that_weaken_the_pod_are_refused(ksim, extra, words):
    spawner = make_spawner(ksim, "hank", **extra)
    with pytest.raises(HTTPError) as e:
        await spawner.start()
    assert words in e.value.log_message
    await spawner.stop()


async def test_with_the_operators_opt_in_the_profile_gets_what_it_asks(ksim):
    catalogue = copy.deepcopy(CATALOGUE)
    catalogue["allow_security_overrides"] = True
    catalogue["profiles"][0]["init_containers"] = [
        {
            "name": "root-step",
            "image": "busybox:1.36",
            "securityContext": {"runAsUser": 0, "runAsNonRoot": False},
        }
    ]
    spawner = make_spawner(ksim, "ivy", catalogue=catalogue)
    await spawner.start()
    pod = obj(ksim, "pods", "apex-ivy", spawner.pod_name)
    (init,) = pod["spec"]["initContainers"]
    context = init["securityContext"]
    assert context["runAsUser"] == 0 and context["runAsNonRoot"] is False
    # what the container did not set still comes from the restricted defaults
    assert context["capabilities"] == {"drop": ["ALL"]} and context["allowPrivilegeEscalation"] is False
    await spawner.stop()


async def test_secure_pod_defaults_off_is_the_operators_choice(ksim):
    spawner = make_spawner(ksim, "jack", secure_pod_defaults=False, init_containers=[CHART_METADATA_BLOCKER])
    await spawner.start()
    names = [c["name"] for c in obj(ksim, "pods", "apex-jack", spawner.pod_name)["spec"]["initContainers"]]
    assert names == ["block-cloud-metadata"]
    await spawner.stop()

"""helm-values/rbac.yaml, enforced by a real API server: the whole lifecycle of
tests/spawner/test_rbac_coverage.py (every kind of workspace object; start, stop, start, stop; a
named server and its deletion; the user's deletion with the namespace) as the hub's
ServiceAccount. Any permission rbac.yaml lacks is a 403 here, whatever verb kubesim logged."""

import copy

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from tests.helpers.spawner import make_spawner
from tests.helpers.wait import until
from tests.realcluster.test_spawner_real import SERVE, pull_secret  # noqa: F401 - a fixture
from tests.spawner.test_rbac_coverage import EVERYTHING

pytestmark = pytest.mark.realcluster


def spawner(cluster, **traits):
    return make_spawner(
        cluster,
        "ada",
        catalogue=copy.deepcopy(EVERYTHING),
        cmd=SERVE,
        start_timeout=180,
        http_timeout=180,
        conda_builder="venv",
        delete_namespace_on_user_delete=True,
        **{**cluster.spawner_traits, **traits},
    )


async def test_the_whole_lifecycle_is_allowed_by_rbac_yaml(hub, node, admin):
    default = spawner(hub)
    try:
        await default.start()
        await default.stop()
        await default.start()  # the second start finds everything in place
        await default.stop()
        named = spawner(hub, server_name="run1")
        await named.start()
        await named.stop()
        await named.delete_forever()
    finally:
        await default.delete_forever()  # the user: the namespace goes
    v1 = client.CoreV1Api(admin)

    async def namespace_gone() -> bool:  # the namespace controller finished
        try:
            await v1.read_namespace(default.namespace)
        except ApiException as e:
            assert e.status == 404
            return True
        return False

    await until(namespace_gone, interval=0.5)

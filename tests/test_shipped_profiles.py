"""Every profile we ship starts: helm-values/values.yaml's catalogue (= examples/profiles.yml), on kubesim.

Each spawner is built from the Z2JH 4.4.0 configuration path (tests/helpers/z2jh.py) exactly as the hub
builds it, for a user in the groups the profile needs, and started for real on kubesim's process
kubelet, which resolves every ConfigMap/Secret reference, volume and claim as a kubelet does (a
missing ConfigMap is a CreateContainerConfigError, as on a cluster): every object passes kubesim's
checks (the Kubernetes schemas when kubernetes-validate is installed), the pod runs, and nothing in the
pod is privileged. The server command is a small HTTP server: no hub runs here, and images are labels.
"""

from __future__ import annotations

import sys

import pytest
from jupyterhub.objects import Hub
from kubernetes_asyncio import client

from apex_hub.kubesim import KubeSim
from apex_hub.profiles import Catalogue
from tests.helpers import z2jh
from tests.helpers.spawner import HubUser

VALUES = z2jh.load_values()
#: A stand-in server: answers HTTP on the --ip/--port KubeSpawner passes (no hub runs in this test).
SERVER = (
    "import sys, http.server as h; a = dict(x[2:].split('=', 1) for x in sys.argv[1:] if '=' in x);"
    " h.HTTPServer((a.get('ip', '0.0.0.0'), int(a.get('port', 8888))), h.SimpleHTTPRequestHandler)"
    ".serve_forever()"
)
CATALOGUE = Catalogue.from_yaml(VALUES["hub"]["extraFiles"]["apex-profiles"]["stringData"], "values")


@pytest.fixture
async def psim(monkeypatch, tmp_path):
    from kubespawner import KubeSpawner

    monkeypatch.setenv("KUBECONFIG", "")
    async with KubeSim(kubelet="process", workdir=tmp_path / "sim") as sim:
        sim.make_default()
        yield sim
        await KubeSpawner._stop_all_reflectors()


@pytest.fixture
def chart_env(monkeypatch):
    for key, value in {
        "POD_NAMESPACE": "jhub",
        "HUB_SERVICE_PORT": "8081",
        "JUPYTERHUB_CRYPT_KEY": "ab" * 32,
        "OAUTH_CLIENT_ID": "apex-hub",
        "OAUTH_CLIENT_SECRET": "s3cret",
    }.items():
        monkeypatch.setenv(key, value)


@pytest.mark.process
@pytest.mark.parametrize("profile", [p.slug for p in CATALOGUE.profiles])
async def test_every_shipped_profile_starts(psim, chart_env, tmp_path, profile):
    from apex_hub.spawner import APExSpawner

    mounts = z2jh.write_extra_files(VALUES, str(tmp_path))
    c = z2jh.chart_config(VALUES, mounts=mounts)
    c.APExSpawner.k8s_api_host = psim.url
    c.APExSpawner.k8s_api_request_retry_timeout = 20
    c.APExSpawner.cmd = [sys.executable, "-c", SERVER]
    c.APExSpawner.conda_builder = "venv"  # no Conda channel is reachable here
    c.APExSpawner.start_timeout = 120
    async with psim.api_client() as api:
        v1 = client.CoreV1Api(api)
        await v1.create_namespace({"metadata": {"name": "jhub"}})
        await v1.create_namespaced_secret(
            "jhub",
            {  # the pull secret the operator creates (README step 2)
                "metadata": {"name": "apex-registry"},
                "type": "kubernetes.io/dockerconfigjson",
                "data": {".dockerconfigjson": "eyJhdXRocyI6e319"},
            },
        )
    [entry] = [p for p in CATALOGUE.profiles if p.slug == profile]
    groups = sorted(entry.groups or [])[:1]  # one group that grants it (none: open to everyone)
    spawner = APExSpawner(
        config=c, hub=Hub(), user=HubUser("ada", groups=groups), api_token="t", oauth_client_id="c"
    )
    spawner.user_options = {"profile": profile}
    await spawner.start()
    try:
        async with psim.api_client() as api:
            pod = await client.CoreV1Api(api).read_namespaced_pod(spawner.pod_name, spawner.namespace)
        assert pod.status.phase == "Running"
        assert pod.metadata.labels["apex.esa.int/profile"] == profile
        for container in list(pod.spec.containers) + list(pod.spec.init_containers or []):
            sc = container.security_context
            assert sc and not sc.privileged and sc.run_as_user != 0, (container.name, sc)
    finally:
        await spawner.stop()

"""The package as an operator installs it: entry points and the console script."""

import subprocess
import sys
from importlib.metadata import entry_points

from kubespawner import KubeSpawner

from apex_hub.kubesim import KubeSim


def test_spawner_entry_point_resolves_apex():
    eps = {ep.name: ep for ep in entry_points(group="jupyterhub.spawners")}
    spawner = eps["apex"].load()
    assert spawner.__name__ == "APExSpawner" and issubclass(spawner, KubeSpawner)


def test_console_script_documents_kubesim():
    out = subprocess.run(
        [sys.executable, "-m", "apex_hub.cli", "kubesim", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for flag in ("--port", "--kubeconfig", "--kubelet", "--latency", "--fault", "--no-validate"):
        assert flag in out


def test_console_script_rejects_a_bad_fault():
    r = subprocess.run(
        [sys.executable, "-m", "apex_hub.cli", "kubesim", "--fault", "[1]"], capture_output=True, text=True
    )
    assert r.returncode != 0 and "--fault must be a JSON object" in r.stderr


async def test_faults_active_from_start():
    async with KubeSim(kubelet=None, faults=[{"verb": "list", "resource": "pods", "status": 503}]) as sim:
        import aiohttp

        async with aiohttp.ClientSession() as s:
            async with s.get(f"{sim.url}/api/v1/pods") as r:
                assert r.status == 503
            async with s.get(f"{sim.url}/api/v1/pods") as r:
                assert r.status == 200


def test_every_apex_spawner_option_is_documented():
    from apex_hub.spawner import APExSpawner

    own = {
        name: trait
        for name, trait in APExSpawner.class_traits(config=True).items()
        if name not in KubeSpawner.class_traits(config=True)
    }
    assert {
        "profiles_file",
        "namespace_prefix",
        "delete_namespace_on_user_delete",
        "manifest_kinds",
        "conda_builder",
        "secure_pod_defaults",
    } <= set(own)
    # the configuration reference is generated from these help texts (tests/test_docs.py checks that
    # each option is on the page)
    undocumented = [name for name, trait in own.items() if len((trait.help or "").split()) < 5]
    assert not undocumented

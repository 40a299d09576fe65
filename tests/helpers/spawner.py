"""APExSpawner driven in process against kubesim (over real HTTP), with a stand-in hub user.

The `ksim` fixture is re-exported by tests/spawner/conftest.py."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import yaml
from jupyterhub.objects import Hub, Server
from kubespawner import KubeSpawner
from traitlets.config import Config

from apex_hub.kubesim import KubeSim
from apex_hub.spawner import APExSpawner

IMAGE = "quay.io/jupyterhub/k8s-singleuser-sample:4.0.0"


class HubUser:
    """The attributes of ``jupyterhub.user.User`` that the spawner reads outside a hub."""

    def __init__(self, name, uid=1, groups=()):
        self.name, self.id = name, uid
        self.server = Server(base_url=f"/user/{name}/")
        self.url = self.server.base_url
        self.progress_url = f"/hub/api/users/{name}/server/progress"
        self.groups = [SimpleNamespace(name=g) for g in groups]


CATALOGUE = {
    "defaults": {"cpu_guarantee": 0.1, "mem_guarantee": "256M"},
    "profiles": [
        {
            "slug": "lab",
            "display_name": "JupyterLab",
            "default": True,
            "cpu_limit": 1,
            "mem_limit": "1G",
            "config_maps": [
                {
                    "name": "bashrc",
                    "key": ".bashrc",
                    "mount_path": "/home/jovyan/.bashrc",
                    "content": "export PS1='{username}@{namespace} $ '\n",
                }
            ],
            "env": {"APEX_PROFILE": "{profile}"},
        },
        {
            "slug": "large",
            "display_name": "Large",
            "groups": ["apex-large"],
            "cpu_limit": 4,
            "mem_limit": "8G",
        },
    ],
}


def make_spawner(
    sim,
    name="alice",
    uid=1,
    groups=(),
    catalogue=None,
    user_options=None,
    server_name="",
    kubespawner=None,
    **traits,
) -> APExSpawner:
    """An APExSpawner on ``sim``; ``traits`` go to ``c.APExSpawner``, ``kubespawner`` (a dict)
    to ``c.KubeSpawner`` (the section the Z2JH chart writes)."""
    c = Config()
    c.APExSpawner.k8s_api_host = sim.url
    c.APExSpawner.image = IMAGE
    c.APExSpawner.start_timeout = 20
    c.APExSpawner.hub_namespace = "jhub"
    c.APExSpawner.k8s_api_request_retry_timeout = 20
    if isinstance(catalogue, str):
        c.APExSpawner.profiles_file = catalogue
    else:
        c.APExSpawner.profiles_catalogue = catalogue if catalogue is not None else CATALOGUE
    for key, value in traits.items():
        setattr(c.APExSpawner, key, value)
    for key, value in (kubespawner or {}).items():
        setattr(c.KubeSpawner, key, value)
    spawner = APExSpawner(
        hub=Hub(),
        user=HubUser(name, uid, groups),
        config=c,
        api_token="t",
        oauth_client_id="c",
        orm_spawner=SimpleNamespace(name=server_name, server=None) if server_name else None,
    )
    spawner.user_options = dict(user_options or {})
    return spawner


@pytest.fixture
async def ksim(monkeypatch):
    monkeypatch.setenv("KUBECONFIG", "")
    # KubeSpawner's load_config is cached by host and sets the *global* default configuration:
    # when the OS hands this kubesim the port of an earlier test's, the cached call would be
    # skipped and new clients would keep the last (dead) kubesim's address. Forget the cache.
    from kubespawner.clients import load_config

    load_config.cache_clear()
    async with KubeSim(kubelet="instant") as sim:
        sim.make_default()
        yield sim
        await KubeSpawner._stop_all_reflectors()


def obj(sim, plural, namespace, name, group="", version="v1"):
    """An object straight from kubesim's store (None when absent)."""
    rtype = sim.store._rt(plural, group, version)
    return sim.store._raw(rtype, namespace, name)


def objects(sim, plural, namespace=None, group="", version="v1"):
    return sim.store.list(sim.store._rt(plural, group, version), namespace)[0]


def write_catalogue(path, data) -> str:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


async def seed_hub_secret(sim, name="apex-registry"):
    """The hub namespace with a pull Secret in it, to be copied into workspaces."""
    from kubernetes_asyncio import client

    async with sim.api_client() as api:
        v1 = client.CoreV1Api(api)
        await v1.create_namespace({"metadata": {"name": "jhub"}})
        await v1.create_namespaced_secret(
            "jhub",
            {
                "metadata": {"name": name},
                "type": "kubernetes.io/dockerconfigjson",
                "data": {".dockerconfigjson": "eyJhdXRocyI6e319"},
            },
        )


async def refused_start(spawner, caplog, status: int = 500) -> str:
    """Start ``spawner``, expecting the hub's refusal (an HTTPError of ``status``, logged at
    error level); its message."""
    import logging

    from tornado.web import HTTPError

    with caplog.at_level(logging.ERROR), pytest.raises(HTTPError) as info:
        await spawner.start()
    assert info.value.status_code == status
    return info.value.log_message

"""The process kubelet keeps ConfigMap and Secret volumes of running pods up to date.

As in a cluster: a changed object rewrites the mounted files atomically, removed keys
disappear, ``subPath`` mounts keep what they had at start, a deleted object leaves the last
files. Everything goes over real HTTP with kubernetes_asyncio.
"""

import base64
import time

import pytest
from kubernetes_asyncio import client

from apex_hub.kubesim import KubeSim
from tests.kubesim.test_kubelet import is_ready, pod, pod_when, py, wait_for

BIG = 64 * 1024  # large enough that a non-atomic rewrite could be caught half-written

# Prints each distinct content of the mounted token it reads (first character x length), and
# "missing" if the file ever disappears: a reader must see the old token or the new one only.
WATCHER = """
    import os, time
    path = os.path.join(os.environ["KUBESIM_ROOT"], "var/run/token/access")
    seen = None
    while True:
        try:
            with open(path) as f:
                text = f.read()
            now = f"{text[:1]}x{len(text)}"
        except FileNotFoundError:
            now = "missing"
        if now != seen:
            print(now, flush=True)
            seen = now
        time.sleep(0.01)
"""


def b64(text):
    return base64.b64encode(text.encode()).decode()


def content(path):
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


async def until(path, expected):
    await wait_for(lambda: content(path) == expected)


@pytest.fixture
async def process(tmp_path):
    async with KubeSim(kubelet="process", workdir=tmp_path) as sim:
        async with sim.api_client() as api:
            yield sim, client.CoreV1Api(api)


async def test_secret_changes_reach_a_running_pod_but_not_its_subpath_mount(process):
    sim, v1 = process
    await v1.create_namespaced_secret(
        "default", {"metadata": {"name": "token"}, "stringData": {"access": "1" * BIG, "extra": "e1"}}
    )
    await v1.create_namespaced_config_map(
        "default", {"metadata": {"name": "barrier"}, "data": {"n": "0", "old": "o"}}
    )
    sleeper = py(
        "pinned",
        "import time; time.sleep(60)",
        volumeMounts=[
            {"name": "token", "mountPath": "/etc/pinned/access", "subPath": "access"},
            {"name": "barrier", "mountPath": "/etc/barrier"},
        ],
    )
    watcher = py("watcher", WATCHER, volumeMounts=[{"name": "token", "mountPath": "/var/run/token"}])
    await v1.create_namespaced_pod(
        "default",
        pod(
            "app",
            [watcher, sleeper],
            volumes=[
                {"name": "token", "secret": {"secretName": "token", "defaultMode": 0o440}},
                {"name": "barrier", "configMap": {"name": "barrier"}},
            ],
        ),
    )
    await pod_when(v1, "default", "app", is_ready)
    root = sim.kubelet.pod_root("default", "app")
    token, extra, pinned = (
        root / "var/run/token/access",
        root / "var/run/token/extra",
        root / "etc/pinned/access",
    )
    assert content(token) == "1" * BIG and content(extra) == "e1" and content(pinned) == "1" * BIG

    # the watcher has read the first value (a loaded machine may start its process late)
    await wait_for(lambda: "1x65536" in sim.kubelet.logs("default", "app", "watcher"))
    # patch: a new value, a key removed; the subPath copy stays as it was at start
    await v1.patch_namespaced_secret("token", "default", {"data": {"access": b64("2" * BIG), "extra": None}})
    await until(token, "2" * BIG)
    await wait_for(lambda: not extra.exists())
    assert token.stat().st_mode & 0o777 == 0o440
    assert content(pinned) == "1" * BIG
    await wait_for(lambda: "2x65536" in sim.kubelet.logs("default", "app", "watcher"))
    assert set(sim.kubelet.logs("default", "app", "watcher").split()) == {"1x65536", "2x65536"}

    # deleted: the last files stay (a later change to a ConfigMap shows the kubelet caught up)
    await v1.delete_namespaced_secret("token", "default")
    await v1.patch_namespaced_config_map("barrier", "default", {"data": {"n": "1", "old": None}})
    await until(root / "etc/barrier/n", "1")
    assert not (root / "etc/barrier/old").exists()
    assert content(token) == "2" * BIG and content(pinned) == "1" * BIG

    # created again: its content is mounted again
    await v1.create_namespaced_secret(
        "default", {"metadata": {"name": "token"}, "stringData": {"access": "3", "extra": "e3"}}
    )
    await until(token, "3")
    await until(extra, "e3")
    assert content(pinned) == "1" * BIG
    await wait_for(lambda: "3x1" in sim.kubelet.logs("default", "app", "watcher"))
    assert set(sim.kubelet.logs("default", "app", "watcher").split()) == {"1x65536", "2x65536", "3x1"}


async def test_configmap_items_and_modes_follow_apply_and_replace(process):
    sim, v1 = process
    await v1.create_namespaced_config_map(
        "default",
        {
            "metadata": {"name": "settings"},
            "data": {"lab.json": '{"theme": "light"}', "condarc": "channels: [conda-forge]", "unused": "x"},
        },
    )
    items = [
        {"key": "lab.json", "path": "lab/settings.json", "mode": 0o600},
        {"key": "condarc", "path": ".condarc"},
    ]
    await v1.create_namespaced_pod(
        "default",
        pod(
            "lab",
            [
                py(
                    "c",
                    "import time; time.sleep(60)",
                    volumeMounts=[
                        {"name": "settings", "mountPath": "/etc/jupyter"},
                        {"name": "settings", "mountPath": "/home/jovyan/.condarc", "subPath": ".condarc"},
                    ],
                )
            ],
            volumes=[
                {"name": "settings", "configMap": {"name": "settings", "items": items, "defaultMode": 0o444}}
            ],
        ),
    )
    await pod_when(v1, "default", "lab", is_ready)
    root = sim.kubelet.pod_root("default", "lab")
    lab, condarc, home_condarc = (
        root / "etc/jupyter/lab/settings.json",
        root / "etc/jupyter/.condarc",
        root / "home/jovyan/.condarc",
    )
    assert content(lab) == '{"theme": "light"}' and content(condarc) == "channels: [conda-forge]"
    assert not (root / "etc/jupyter/unused").exists()

    # server-side apply changes both projected keys
    await v1.patch_namespaced_config_map(
        "settings",
        "default",
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "settings"},
            "data": {"lab.json": '{"theme": "dark"}', "condarc": "channels: [defaults]", "unused": "x"},
        },
        field_manager="test",
        _content_type="application/apply-patch+yaml",
    )
    await until(lab, '{"theme": "dark"}')
    await until(condarc, "channels: [defaults]")
    assert lab.stat().st_mode & 0o777 == 0o600 and condarc.stat().st_mode & 0o777 == 0o444
    assert content(home_condarc) == "channels: [conda-forge]"  # subPath: never updated
    assert not (root / "etc/jupyter/unused").exists()

    # an update (PUT) that drops a projected key cannot be mounted: the volume keeps its files
    # until the key is back (then a barrier: another pod-visible change shows the kubelet caught up)
    current = await v1.read_namespaced_config_map("settings", "default")
    current.data = {"condarc": "channels: [bioconda]"}
    await v1.replace_namespaced_config_map("settings", "default", current)
    assert content(condarc) == "channels: [defaults]" and content(lab) == '{"theme": "dark"}'
    await v1.patch_namespaced_config_map("settings", "default", {"data": {"lab.json": '{"theme": "auto"}'}})
    await until(lab, '{"theme": "auto"}')
    assert content(condarc) == "channels: [bioconda]"


async def test_optional_secret_created_later_and_sync_delay(tmp_path):
    async with KubeSim(
        kubelet="process", workdir=tmp_path, kubelet_options={"volume_sync_delay": 1.0}
    ) as sim:
        async with sim.api_client() as api:
            v1 = client.CoreV1Api(api)
            sleeper = py(
                "c", "import time; time.sleep(60)", volumeMounts=[{"name": "creds", "mountPath": "/creds"}]
            )
            await v1.create_namespaced_pod(
                "default",
                pod(
                    "later",
                    [sleeper],
                    volumes=[{"name": "creds", "secret": {"secretName": "creds", "optional": True}}],
                ),
            )
            await pod_when(v1, "default", "later", is_ready)
            root = sim.kubelet.pod_root("default", "later")
            assert (root / "creds").is_dir() and content(root / "creds/key") is None
            created = time.monotonic()
            await v1.create_namespaced_secret(
                "default", {"metadata": {"name": "creds"}, "stringData": {"key": "k"}}
            )
            await until(root / "creds/key", "k")
            assert time.monotonic() - created >= 0.9  # not before the configured delay

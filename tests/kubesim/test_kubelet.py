"""The kubesim kubelet: scheduling, phases and events, and pods as real local processes.

Everything goes over real HTTP with kubernetes_asyncio, as a spawner would see it.
"""

import asyncio
import json
import textwrap

import aiohttp
import pytest
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from apex_hub.kubesim import KubeSim
from tests.helpers.wait import until as wait_for


async def pod_when(v1, ns, name, pred):
    async def check():
        pod = await v1.read_namespaced_pod(name, ns)
        return pod if pred(pod) else None

    return await wait_for(check, interval=0.05)


async def gone(v1, ns, name):
    try:
        await v1.read_namespaced_pod(name, ns)
    except ApiException as e:
        return e.status == 404
    return False


async def events(v1, ns, name):
    items = (await v1.list_namespaced_event(ns, field_selector=f"involvedObject.name={name}")).items
    return sorted(items, key=lambda e: int(e.metadata.resource_version))


def is_ready(pod):
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def pod(name, containers, **spec):
    return {"metadata": {"name": name}, "spec": {"containers": containers, **spec}}


def py(name, code, **extra):
    """A container running a Python snippet (``python`` is the kubelet's own interpreter)."""
    return {"name": name, "image": "python:3.11", "command": ["python", "-c", textwrap.dedent(code)], **extra}


async def http_get(url):
    async with aiohttp.ClientSession() as session:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=60)) as r:
            return r.status, await r.text()


async def answers(url):
    try:
        await http_get(url)
        return True
    except (TimeoutError, aiohttp.ClientError, OSError):
        return False


def process_gone(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")  # a zombie has ended
    except FileNotFoundError:
        return True


@pytest.fixture
async def instant():
    async with KubeSim(kubelet="instant") as sim:
        async with sim.api_client() as api:
            yield sim, client.CoreV1Api(api)


@pytest.fixture
async def process(tmp_path):
    async with KubeSim(
        kubelet="process",
        workdir=tmp_path,
        kubelet_options={"restart_backoff": 0.2, "env": {"FROM_KUBELET": "yes"}},
    ) as sim:
        async with sim.api_client() as api:
            yield sim, client.CoreV1Api(api)


# -- instant mode -------------------------------------------------------------------------


async def test_instant_pod_runs_with_ip_ready_containers_and_events(instant):
    sim, v1 = instant
    await v1.create_namespaced_pod(
        "default",
        pod(
            "web",
            [{"name": "notebook", "image": "jupyter/base:1", "ports": [{"containerPort": 8888}]}],
            initContainers=[{"name": "setup", "image": "busybox:1"}],
        ),
    )
    p = await pod_when(v1, "default", "web", lambda p: p.status.phase == "Running")
    assert p.spec.node_name == "kubesim-node"
    assert p.status.pod_ip.startswith("127.0.0.") and p.status.host_ip == "127.0.0.1" and p.status.start_time
    assert {c.type: c.status for c in p.status.conditions} == {
        "PodScheduled": "True",
        "Initialized": "True",
        "ContainersReady": "True",
        "Ready": "True",
    }
    (cs,) = p.status.container_statuses
    assert cs.ready and cs.started and cs.restart_count == 0 and cs.state.running.started_at
    assert cs.image == "jupyter/base:1" and cs.image_id
    (init,) = p.status.init_container_statuses
    assert init.state.terminated.exit_code == 0 and init.state.terminated.reason == "Completed"
    got = [(e.reason, e.message, e.source.component) for e in await events(v1, "default", "web")]
    assert got == [
        ("Scheduled", "Successfully assigned default/web to kubesim-node", "default-scheduler"),
        ("Pulling", 'Pulling image "busybox:1"', "kubelet"),
        ("Pulled", 'Successfully pulled image "busybox:1" in 0.1s', "kubelet"),
        ("Created", "Created container setup", "kubelet"),
        ("Started", "Started container setup", "kubelet"),
        ("Pulling", 'Pulling image "jupyter/base:1"', "kubelet"),
        ("Pulled", 'Successfully pulled image "jupyter/base:1" in 0.1s', "kubelet"),
        ("Created", "Created container notebook", "kubelet"),
        ("Started", "Started container notebook", "kubelet"),
    ]
    assert sim.kubelet.logs("default", "web") == ""
    await v1.delete_namespaced_pod("web", "default")  # graceful: the kubelet finishes it
    await wait_for(lambda: gone(v1, "default", "web"))
    assert [e.reason for e in await events(v1, "default", "web")][-1] == "Killing"


async def test_phase_delay_shows_pending_first():
    async with KubeSim(kubelet="instant", kubelet_options={"phase_delay": 0.1}) as sim:
        async with sim.api_client() as api:
            v1 = client.CoreV1Api(api)
            before = (await v1.list_namespaced_pod("default")).metadata.resource_version
            loop = asyncio.get_running_loop()
            created = loop.time()
            await v1.create_namespaced_pod("default", pod("slow", [{"name": "c", "image": "x:1"}]))
            await pod_when(v1, "default", "slow", lambda p: p.status.phase == "Running")
            assert loop.time() - created >= 0.1  # not before the delay (a loaded machine is later still)
            # every state the pod went through, in order, however late this test looks
            phases = []
            w = watch.Watch()
            async for event in w.stream(
                v1.list_namespaced_pod, "default", resource_version=before, timeout_seconds=120
            ):
                phases.append(event["object"].status.phase)
                if phases[-1] == "Running":
                    break
            await w.close()
            assert phases[0] == "Pending" and phases[-1] == "Running"


async def test_broken_image_stays_pending_with_pull_errors(instant):
    sim, v1 = instant
    await v1.create_namespaced_pod("default", pod("bad", [{"name": "c", "image": "quay.io/nope:broken"}]))
    p = await pod_when(
        v1,
        "default",
        "bad",
        lambda p: (
            p.status.container_statuses
            and p.status.container_statuses[0].state.waiting.reason == "ImagePullBackOff"
        ),
    )
    assert p.status.phase == "Pending" and not is_ready(p)
    warnings = [(e.reason, e.message) for e in await events(v1, "default", "bad") if e.type == "Warning"]
    assert warnings[0][0] == "Failed" and 'Failed to pull image "quay.io/nope:broken"' in warnings[0][1]
    assert "not found" in warnings[0][1] and warnings[1][0] == "BackOff"
    await v1.create_namespaced_pod("default", pod("stuck", [{"name": "c", "image": "x:stuck"}]))
    await asyncio.sleep(0.2)
    p = await v1.read_namespaced_pod("stuck", "default")
    assert p.status.phase == "Pending"
    assert p.status.container_statuses[0].state.waiting.reason == "ContainerCreating"


async def test_pod_ips_are_unique_exhausted_and_reused():
    async with KubeSim(kubelet="instant", kubelet_options={"first_ip": 253}) as sim:
        async with sim.api_client() as api:
            v1 = client.CoreV1Api(api)
            for name in ("a", "b", "c"):
                await v1.create_namespaced_pod("default", pod(name, [{"name": "c", "image": "x:1"}]))
            a = await pod_when(v1, "default", "a", lambda p: p.status.phase == "Running")
            b = await pod_when(v1, "default", "b", lambda p: p.status.phase == "Running")
            assert {a.status.pod_ip, b.status.pod_ip} == {"127.0.0.253", "127.0.0.254"}
            c = await pod_when(v1, "default", "c", lambda p: p.status.phase == "Failed")
            assert "no IP addresses available" in c.status.message
            await v1.delete_namespaced_pod("a", "default", grace_period_seconds=0)
            await wait_for(lambda: gone(v1, "default", "a"))
            await v1.create_namespaced_pod("default", pod("d", [{"name": "c", "image": "x:1"}]))
            d = await pod_when(v1, "default", "d", lambda p: p.status.phase == "Running")
            assert d.status.pod_ip == a.status.pod_ip


async def test_pods_created_before_start_are_adopted():
    sim = KubeSim(kubelet="instant")
    sim.store.create(sim.store._rt("pods"), "default", pod("early", [{"name": "c", "image": "x:1"}]))
    async with sim:
        async with sim.api_client() as api:
            v1 = client.CoreV1Api(api)
            await pod_when(v1, "default", "early", lambda p: p.status.phase == "Running")


# -- process mode -------------------------------------------------------------------------

ENV_DUMP = """
    import json, os, time
    path = os.path.join(os.environ["KUBESIM_ROOT"], "out", "env.json")
    with open(path + ".tmp", "w") as f:
        json.dump({"env": dict(os.environ), "cwd": os.getcwd()}, f)
    os.rename(path + ".tmp", path)
    time.sleep(60)
"""


async def test_process_pod_serves_configmap_over_http_with_env(process):
    sim, v1 = process
    await v1.create_namespaced_config_map(
        "default",
        {"metadata": {"name": "site"}, "data": {"index.html": "hello from a configmap", "greeting": "hi"}},
    )
    await v1.create_namespaced_secret(
        "default", {"metadata": {"name": "creds"}, "stringData": {"password": "s3cret"}}
    )
    web = {
        "name": "web",
        "image": "python:3.11",
        "workingDir": "/srv/site",
        "command": ["python", "-m", "http.server", "8888", "--bind", "0.0.0.0"],
        "ports": [{"name": "http", "containerPort": 8888}],
        "readinessProbe": {"httpGet": {"path": "/index.html", "port": "http"}},
        "volumeMounts": [{"name": "site", "mountPath": "/srv/site"}],
    }
    dump = py(
        "dump",
        ENV_DUMP,
        volumeMounts=[{"name": "out", "mountPath": "/out"}],
        env=[
            {"name": "LITERAL", "value": "plain"},
            {"name": "SERVICE_URL", "value": "http://0.0.0.0:8888/user/x/"},
            {"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "site", "key": "greeting"}}},
            {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        ],
        envFrom=[{"configMapRef": {"name": "site"}, "prefix": "CM_"}],
    )
    await v1.create_namespaced_pod(
        "default",
        pod(
            "web",
            [web, dump],
            volumes=[{"name": "site", "configMap": {"name": "site"}}, {"name": "out", "emptyDir": {}}],
        ),
    )
    p = await pod_when(v1, "default", "web", is_ready)
    ip = p.status.pod_ip
    assert p.status.phase == "Running" and all(c.ready for c in p.status.container_statuses)
    status, body = await http_get(f"http://{ip}:8888/index.html")
    assert status == 200 and body == "hello from a configmap"

    root = sim.kubelet.pod_root("default", "web")
    assert oct((root / "srv/site/index.html").stat().st_mode & 0o777) == oct(0o444)
    dumped = json.loads(
        (await wait_for(lambda: (root / "out/env.json").exists() and root / "out/env.json")).read_text()
    )
    env = dumped["env"]
    assert env["LITERAL"] == "plain" and env["GREETING"] == "hi" and env["PASSWORD"] == "s3cret"
    assert env["POD_NAME"] == "web" and env["POD_IP"] == ip and env["CM_greeting"] == "hi"
    assert env["SERVICE_URL"] == f"http://{ip}:8888/user/x/"  # the pod's 0.0.0.0 is its own address
    assert env["HOME"] == str(root / "home/jovyan") == dumped["cwd"] and env["KUBESIM_ROOT"] == str(root)
    assert env["FROM_KUBELET"] == "yes" and "KUBERNETES_SERVICE_HOST" not in env

    # two containers: a real API server wants the container named (400 otherwise, see test_podio.py)
    assert "GET /index.html" in await v1.read_namespaced_pod_log("web", "default", container="web")
    await v1.delete_namespaced_pod("web", "default")  # graceful: SIGTERM, then the pod goes away
    await wait_for(lambda: gone(v1, "default", "web"))
    assert not await answers(f"http://{ip}:8888/")
    assert not root.exists()
    assert "Killing" in [e.reason for e in await events(v1, "default", "web")]


async def test_init_container_and_pvc_outlive_the_pod(process, tmp_path):
    sim, v1 = process
    await v1.create_namespaced_persistent_volume_claim(
        "default",
        {
            "metadata": {"name": "data"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
        },
    )
    volumes = [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]
    init = py(
        "init",
        "import os; open(os.environ['KUBESIM_ROOT'] + '/data/init.txt', 'w').write('from init')",
        volumeMounts=[{"name": "data", "mountPath": "/data"}],
    )
    main = py(
        "main",
        """
        import os, time
        root = os.environ["KUBESIM_ROOT"]
        seen = open(root + "/data/init.txt").read()
        open(root + "/data/main.txt", "w").write("main saw: " + seen)
        time.sleep(60)
    """,
        volumeMounts=[{"name": "data", "mountPath": "/data"}],
    )
    await v1.create_namespaced_pod(
        "default",
        pod("first", [main], initContainers=[init], volumes=volumes, terminationGracePeriodSeconds=1),
    )
    p = await pod_when(v1, "default", "first", is_ready)
    assert p.status.init_container_statuses[0].state.terminated.exit_code == 0
    claim_dir = tmp_path / "node" / "pvcs" / "default" / "data"
    await wait_for(lambda: (claim_dir / "main.txt").exists())
    await v1.delete_namespaced_pod("first", "default")
    await wait_for(lambda: gone(v1, "default", "first"))
    assert (claim_dir / "main.txt").read_text() == "main saw: from init"

    # a second pod gets the claim as its home directory (and working directory)
    reader = py(
        "reader",
        "print(open('main.txt').read())",
        volumeMounts=[{"name": "data", "mountPath": "/home/jovyan"}],
    )
    await v1.create_namespaced_pod("default", pod("second", [reader], volumes=volumes, restartPolicy="Never"))
    p = await pod_when(v1, "default", "second", lambda p: p.status.phase == "Succeeded")
    assert p.status.container_statuses[0].state.terminated.reason == "Completed"
    assert sim.kubelet.logs("default", "second") == "main saw: from init\n"


async def test_crashing_container_restarts_and_never_policy_fails(process):
    sim, v1 = process
    await v1.create_namespaced_pod(
        "default", pod("crash", [py("c", "import sys; print('boom'); sys.exit(3)")])
    )
    p = await pod_when(v1, "default", "crash", lambda p: p.status.container_statuses[0].restart_count >= 2)
    cs = p.status.container_statuses[0]
    assert cs.last_state.terminated.exit_code == 3 and cs.last_state.terminated.reason == "Error"
    assert p.status.phase == "Running"
    assert "BackOff" in [e.reason for e in await events(v1, "default", "crash")]
    assert sim.kubelet.logs("default", "crash").count("boom") >= 2

    await v1.create_namespaced_pod(
        "default", pod("once", [py("c", "raise SystemExit(1)")], restartPolicy="Never")
    )
    p = await pod_when(v1, "default", "once", lambda p: p.status.phase == "Failed")
    term = p.status.container_statuses[0].state.terminated
    assert (
        term.exit_code == 1 and term.reason == "Error" and p.status.container_statuses[0].restart_count == 0
    )


async def test_failing_init_container_blocks_or_fails_the_pod(process):
    sim, v1 = process
    main = py("main", "import time; time.sleep(60)")
    await v1.create_namespaced_pod(
        "default", pod("retry", [main], initContainers=[py("init", "raise SystemExit(2)")])
    )
    p = await pod_when(
        v1, "default", "retry", lambda p: p.status.init_container_statuses[0].restart_count >= 1
    )
    assert (
        p.status.phase == "Pending"
        and p.status.container_statuses[0].state.waiting.reason == "PodInitializing"
    )
    assert p.status.init_container_statuses[0].last_state.terminated.exit_code == 2
    assert "BackOff" in [e.reason for e in await events(v1, "default", "retry")]
    await v1.create_namespaced_pod(
        "default",
        pod("never", [main], initContainers=[py("init", "raise SystemExit(2)")], restartPolicy="Never"),
    )
    p = await pod_when(v1, "default", "never", lambda p: p.status.phase == "Failed")
    assert p.status.init_container_statuses[0].state.terminated.exit_code == 2


async def test_missing_configmap_fails_mount_until_created(process):
    sim, v1 = process
    await v1.create_namespaced_pod(
        "default",
        pod(
            "waits",
            [
                py(
                    "c",
                    "import time; time.sleep(60)",
                    volumeMounts=[{"name": "cfg", "mountPath": "/etc/app/app.conf", "subPath": "app.conf"}],
                )
            ],
            volumes=[
                {
                    "name": "cfg",
                    "configMap": {
                        "name": "app",
                        "items": [{"key": "conf", "path": "app.conf", "mode": 0o600}],
                    },
                }
            ],
        ),
    )
    await wait_for(lambda: events(v1, "default", "waits"))
    await asyncio.sleep(0.3)
    assert (await v1.read_namespaced_pod("waits", "default")).status.phase == "Pending"
    failed = [e for e in await events(v1, "default", "waits") if e.reason == "FailedMount"]
    assert failed and failed[0].type == "Warning"
    assert failed[0].message == 'MountVolume.SetUp failed for volume "cfg" : configmap "app" not found'
    await v1.create_namespaced_config_map("default", {"metadata": {"name": "app"}, "data": {"conf": "x=1"}})
    await pod_when(v1, "default", "waits", is_ready)
    conf = sim.kubelet.pod_root("default", "waits") / "etc/app/app.conf"
    assert conf.read_text() == "x=1" and conf.stat().st_mode & 0o777 == 0o600


async def test_stop_leaves_no_process_behind(tmp_path):
    stubborn = """
        import os, signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        with open(os.path.join(os.environ["KUBESIM_ROOT"], "out", "pids"), "w") as f:
            f.write(f"{os.getpid()} {child.pid}")
        time.sleep(60)
    """
    async with KubeSim(kubelet="process", workdir=tmp_path) as sim:
        sim.kubelet.stop_timeout = 0.5
        async with sim.api_client() as api:
            v1 = client.CoreV1Api(api)
            await v1.create_namespaced_pod(
                "default",
                pod(
                    "stubborn",
                    [py("c", stubborn, volumeMounts=[{"name": "out", "mountPath": "/out"}])],
                    volumes=[{"name": "out", "emptyDir": {}}],
                ),
            )
            pids_file = sim.kubelet.pod_root("default", "stubborn") / "out" / "pids"
            await wait_for(lambda: pids_file.exists() and pids_file.read_text())
            pids = [int(x) for x in pids_file.read_text().split()]
            assert not any(process_gone(pid) for pid in pids)
    # the container, which ignored SIGTERM, and the child it left behind (SIGKILL to its process group)
    await wait_for(lambda: all(process_gone(pid) for pid in pids))

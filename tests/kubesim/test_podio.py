"""pods/log (tailLines, follow, 400s) and pods/exec (websocket v4/v5 channels) on kubesim.

Found by running KubeSpawner's own suite against kubesim: a real server answers 400 for a
container that does not exist or has not started, honours tailLines and follow=true, and
serves exec over the websocket channel protocol with the exit status on channel 3.
"""

import asyncio
import json
import logging
import shutil
import subprocess
import sys
import textwrap

import aiohttp
import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from apex_hub.kubesim import KubeSim
from tests.helpers.wait import until

pytestmark = pytest.mark.process
KUBECTL = shutil.which("kubectl")


@pytest.fixture
async def psim(tmp_path):
    async with KubeSim(kubelet="process", workdir=tmp_path / "sim") as sim:
        async with sim.api_client() as api:
            yield sim, client.CoreV1Api(api)


def py(name, code):
    return {"name": name, "image": "python:3.11", "command": [sys.executable, "-c", textwrap.dedent(code)]}


async def running(v1, name, ns="default", or_done=False):
    """The pod once its containers run (or, with ``or_done``, have already finished)."""

    async def check():
        pod = await v1.read_namespaced_pod(name, ns)
        if pod.status.phase == "Running" and all(
            cs.state.running for cs in pod.status.container_statuses or []
        ):
            return pod
        return pod if or_done and pod.status.phase == "Succeeded" else None

    return await until(check, interval=0.05)


async def raw_log(sim, name, **params):
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{sim.url}/api/v1/namespaces/default/pods/{name}/log", params=params) as r:
            text = await r.text()
            return r.status, (json.loads(text)["message"] if r.status >= 400 else text)


async def test_tail_lines_and_the_400s_of_a_real_server(psim):
    sim, v1 = psim
    await v1.create_namespaced_pod(
        "default",
        {
            "metadata": {"name": "two"},
            "spec": {
                "containers": [
                    py("a", "for i in range(5): print('line', i, flush=True)\nimport time; time.sleep(600)"),
                    py("b", "import time; time.sleep(600)"),
                ]
            },
        },
    )
    await running(v1, "two")

    async def five_lines():
        return (await raw_log(sim, "two", container="a"))[1].count("\n") >= 5

    await until(five_lines, interval=0.05)
    assert (await raw_log(sim, "two", container="a", tailLines="2")) == (200, "line 3\nline 4\n")
    status, text = await raw_log(sim, "two")
    assert status == 400 and "a container name must be specified for pod two, choose one of: [a b]" in text
    status, text = await raw_log(sim, "two", container="nope")
    assert status == 400 and "container nope is not valid for pod two" in text
    with pytest.raises(ApiException) as info:
        await v1.read_namespaced_pod_log("two", "default", container="nope")
    assert info.value.status == 400


async def test_a_container_that_has_not_started_has_no_log_yet(tmp_path):
    async with KubeSim(kubelet=None) as sim:  # no node: the pod stays Pending
        async with sim.api_client() as api:
            await client.CoreV1Api(api).create_namespaced_pod(
                "default",
                {
                    "metadata": {"name": "p"},
                    "spec": {"containers": [{"name": "main", "image": "x", "command": ["true"]}]},
                },
            )
        status, text = await raw_log(sim, "p")
        assert status == 400 and 'container "main" in pod "p" is waiting to start: ContainerCreating' in text


async def test_follow_streams_until_the_container_stops(psim):
    sim, v1 = psim
    await v1.create_namespaced_pod(
        "default",
        {
            "metadata": {"name": "ticker"},
            "spec": {
                "restartPolicy": "Never",
                "containers": [
                    py(
                        "main",
                        """
            import sys, time
            for i in range(3):
                print('tick', i, flush=True)
                time.sleep(0.3)
        """,
                    )
                ],
            },
        },
    )
    await running(v1, "ticker", or_done=True)  # a loaded machine may see it only once it is done
    async with aiohttp.ClientSession() as s:
        async with s.get(
            f"{sim.url}/api/v1/namespaces/default/pods/ticker/log",
            params={"follow": "true"},
            timeout=aiohttp.ClientTimeout(total=120),
        ) as r:
            assert r.status == 200
            text = (await r.read()).decode()  # returns only once the container has exited
    assert text == "tick 0\ntick 1\ntick 2\n"
    pod = await v1.read_namespaced_pod("ticker", "default")
    assert pod.status.container_statuses[0].state.terminated.exit_code == 0


async def test_a_dropped_log_follower_stops_quietly(psim, tmp_path, caplog):
    """A client that drops a followed log (an interrupted ``kubectl logs -f``) ends the server's
    follower, whether it notices the closed connection itself or when the container writes again
    and the write fails: no "Cannot write to closing transport" traceback, nothing logged above
    debug. Waits on the follower's own end, never on a length of time."""
    sim, v1 = psim
    go = tmp_path / "go"
    chatty = f"""
        import os, time
        print('before', flush=True)
        while not os.path.exists({str(go)!r}):
            time.sleep(0.02)
        print('after', flush=True)
        time.sleep(600)
    """
    await v1.create_namespaced_pod(
        "default", {"metadata": {"name": "chatty"}, "spec": {"containers": [py("main", chatty)]}}
    )
    await running(v1, "chatty")
    loop = asyncio.get_running_loop()
    ended = asyncio.Event()

    class FollowerEnd(logging.Handler):  # the follower's last word, or any problem (to fail at once)
        def emit(self, record):
            if "went away" in record.getMessage() or record.levelno > logging.INFO:
                loop.call_soon_threadsafe(ended.set)

    follower_end = FollowerEnd()
    logging.getLogger().addHandler(follower_end)
    caplog.set_level(logging.DEBUG, logger="apex_hub.kubesim.podio")
    try:
        async with aiohttp.ClientSession() as s:
            r = await s.get(f"{sim.url}/api/v1/namespaces/default/pods/chatty/log", params={"follow": "true"})
            assert r.status == 200
            assert await r.content.readline() == b"before\n"
            r.close()  # drops the connection mid-stream
        go.touch()  # the container writes more, to no one
        await ended.wait()
    finally:
        logging.getLogger().removeHandler(follower_end)
    await until(lambda: "after" in sim.kubelet.logs("default", "chatty"))
    problems = [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno > logging.INFO]
    assert problems == []
    (record,) = [r for r in caplog.records if "went away" in r.getMessage()]
    assert record.getMessage() == "log follower of default/chatty went away"
    follows = await until(lambda: [r for r in sim.requests if r.path.endswith("/pods/chatty/log")])
    assert [r.status for r in follows] == [200]  # the request has ended, recorded as answered


async def exec_ws(sim, name, command, protocol="v5.channel.k8s.io", stdin: bytes | None = None):
    """(stdout, stderr, status) of an exec over the websocket channel protocol."""
    params = [("command", c) for c in command] + [("stdout", "true"), ("stderr", "true")]
    if stdin is not None:
        params.append(("stdin", "true"))
    out, err, status = b"", b"", None
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(
            f"{sim.url.replace('http', 'ws')}/api/v1/namespaces/default/pods/{name}/exec",
            params=params,
            protocols=[protocol],
        ) as ws:
            assert ws.protocol == protocol
            if stdin is not None:
                await ws.send_bytes(b"\x00" + stdin)
                if protocol.startswith("v5"):
                    await ws.send_bytes(b"\xff\x00")  # v5: close stdin
            async for msg in ws:
                channel, data = msg.data[0], msg.data[1:]
                if channel == 1:
                    out += data
                elif channel == 2:
                    err += data
                elif channel == 3:
                    status = json.loads(data)
    return out.decode(), err.decode(), status


@pytest.mark.parametrize("protocol", ["v5.channel.k8s.io", "v4.channel.k8s.io"])
async def test_exec_runs_in_the_container_and_reports_the_exit_code(psim, protocol):
    sim, v1 = psim
    await v1.create_namespaced_pod(
        "default",
        {
            "metadata": {"name": "box"},
            "spec": {
                "containers": [
                    {
                        **py("main", "import time; time.sleep(600)"),
                        "env": [{"name": "GREETING", "value": "hi"}],
                    }
                ]
            },
        },
    )
    await running(v1, "box")
    out, err, status = await exec_ws(
        sim,
        "box",
        [
            sys.executable,
            "-c",
            "import os, sys; print(os.environ['GREETING']); print('oops', file=sys.stderr)",
        ],
        protocol,
    )
    assert (out, err, status) == ("hi\n", "oops\n", {"metadata": {}, "status": "Success"})
    out, err, status = await exec_ws(sim, "box", [sys.executable, "-c", "raise SystemExit(3)"], protocol)
    assert status["status"] == "Failure" and status["reason"] == "NonZeroExitCode"
    assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]
    if protocol.startswith("v5"):
        out, _, status = await exec_ws(sim, "box", ["cat"], protocol, stdin=b"piped\n")
        assert out == "piped\n" and status["status"] == "Success"


async def test_exec_errors(psim):
    sim, v1 = psim
    await v1.create_namespaced_pod(
        "default",
        {"metadata": {"name": "box"}, "spec": {"containers": [py("main", "import time; time.sleep(600)")]}},
    )
    await running(v1, "box")
    async with aiohttp.ClientSession() as s:
        url = f"{sim.url}/api/v1/namespaces/default/pods/box/exec"
        async with s.get(url, params={"command": "true"}) as r:  # no websocket upgrade (e.g. SPDY)
            assert r.status == 400 and "websockets" in json.loads(await r.text())["message"]
        async with s.get(url.replace("/box/", "/nobody/"), params={"command": "true"}) as r:
            assert r.status == 404
        async with s.get(url, params={"command": "true", "container": "nope"}) as r:
            assert r.status == 400
            assert json.loads(await r.text())["message"] == "container nope is not valid for pod box"


@pytest.mark.kubectl
@pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")
async def test_kubectl_exec_and_logs(psim):
    sim, v1 = psim
    await v1.create_namespaced_pod(
        "default",
        {
            "metadata": {"name": "box"},
            "spec": {
                "containers": [py("main", "print('started', flush=True)\nimport time; time.sleep(600)")]
            },
        },
    )
    await running(v1, "box")

    def kubectl(*args):
        return subprocess.run(
            [KUBECTL, "--kubeconfig", sim.kubeconfig_path, *args], capture_output=True, text=True, timeout=120
        )

    done = await asyncio.to_thread(
        kubectl, "exec", "box", "--", sys.executable, "-c", "print('inside'); raise SystemExit(7)"
    )
    assert done.stdout == "inside\n" and done.returncode == 7, done.stderr
    done = await asyncio.to_thread(kubectl, "logs", "box", "--tail=1")
    assert done.stdout == "started\n", done.stderr


async def test_a_process_that_left_the_containers_session_goes_with_the_pod(psim, tmp_path):
    """Jupyter starts kernels in sessions of their own: they must not outlive the pod."""
    import os

    sim, v1 = psim
    pidfile = tmp_path / "grandchild.pid"
    await v1.create_namespaced_pod(
        "default",
        {
            "metadata": {"name": "parent"},
            "spec": {
                "terminationGracePeriodSeconds": 1,
                "containers": [
                    py(
                        "main",
                        f"""
            import subprocess, sys, time
            child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                                     start_new_session=True)
            open({str(pidfile)!r}, "w").write(str(child.pid))
            time.sleep(600)
        """,
                    )
                ],
            },
        },
    )
    await until(lambda: pidfile.exists() and pidfile.read_text(), interval=0.05)
    pid = int(pidfile.read_text())
    os.kill(pid, 0)  # running
    await v1.delete_namespaced_pod("parent", "default")

    def grandchild_gone():
        try:
            os.kill(pid, 0)
            with open(f"/proc/{pid}/stat") as f:  # a zombie waiting for its reaper is gone too
                return f.read().rsplit(")", 1)[1].split()[0] == "Z"
        except (ProcessLookupError, FileNotFoundError):
            return True

    await until(grandchild_gone, interval=0.1)  # with the pod (pytest-timeout guards a hang)

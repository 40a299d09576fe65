"""The culler and monitoring stop on SIGINT and SIGTERM, even when started with SIGINT ignored.

JupyterHub stops its managed services with SIGINT and waits 10 s for each before SIGTERM. A hub started
from a background job (``cmd &``, nohup, some init systems) passes SIGINT on ignored, and a service that
relied on ``KeyboardInterrupt`` then held the hub's shutdown for 10 s per service. The services install
the loop's own handlers instead (``ServiceApp.run_until_signalled``).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import pytest

from apex_hub.local import free_port

#: starts the service with SIGINT ignored, as a background job's children are (SIG_IGN survives exec)
IGNORING_SIGINT = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
    "os.execv(sys.executable, [sys.executable, '-m', *sys.argv[1:]])"
)


def _service_command(service: str, tmp_path) -> tuple[list[str], dict, str]:
    """The service's command line, environment, and a log line printed once its loop runs."""
    hub_port = free_port()  # nothing listens there: the service runs and retries
    env = {
        **os.environ,
        "JUPYTERHUB_API_URL": f"http://127.0.0.1:{hub_port}/hub/api",
        "JUPYTERHUB_API_TOKEN": "token-of-the-test",
        "JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1:{free_port()}",
    }
    if service == "culler":
        policy = tmp_path / "culling.yaml"
        policy.write_text('defaults: {idle_timeout: "1h"}\n')
        args = [f"--policy={policy}", f"--state-dir={tmp_path}", "--interval=3600"]
        return args, env, "serving /api/upcoming on"
    args = ["--public-url=http://127.0.0.1:9", "--interval=3600"]
    return args, env, "apex monitoring on"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("service", ["culler", "monitoring"])
async def test_a_service_started_with_sigint_ignored_stops_when_asked(service, sig, tmp_path):
    args, env, running = _service_command(service, tmp_path)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        IGNORING_SIGINT,
        f"apex_hub.services.{service}",
        *args,
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    seen = []
    try:
        while True:  # until the service's loop runs (its handlers are installed before it)
            line = await proc.stderr.readline()
            assert line, f"the {service} exited before its loop ran:\n{b''.join(seen).decode()}"
            seen.append(line)
            if running.encode() in line:
                break
        proc.send_signal(sig)
        # a hang guard far above the fraction of a second this takes, not a deadline: without the
        # handlers an ignored SIGINT never ends the process, and this fails instead of hanging the run
        rest, _ = await asyncio.wait_for(proc.communicate(), 120)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, (b"".join(seen) + rest).decode()

"""In a real ``jupyterhub`` process, the first APExSpawner freezes the hub's objects (once),
unless ``c.APExSpawner.gc_freeze = False``."""

from __future__ import annotations

import re

import aiohttp
import pytest
import yaml

from apex_hub.kubesim import KubeSim
from tests.helpers.hub import HubProcess, apex_hub_config

pytestmark = pytest.mark.process
CATALOGUE = {"profiles": [{"slug": "lab", "display_name": "JupyterLab", "default": True}]}
FROZE = re.compile(r"gc\.freeze\(\): (\d+) objects kept out of garbage collections")


@pytest.mark.parametrize("switch", ["", "c.APExSpawner.gc_freeze = False\n"], ids=["default", "off"])
async def test_the_hub_freezes_its_objects_at_its_first_spawner(tmp_path, switch):
    profiles = tmp_path / "profiles.yml"
    profiles.write_text(yaml.safe_dump(CATALOGUE))
    async with KubeSim(kubelet="instant", workdir=tmp_path / "sim") as sim:
        config = apex_hub_config(sim.url, str(profiles)) + switch
        async with HubProcess(tmp_path / "hub", config, env={"KUBECONFIG": sim.kubeconfig_path}) as hub:
            assert FROZE.search(hub.log()) is None  # no spawner yet
            for user in ("ada", "bob"):  # the spawn page makes each user's spawner
                async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
                    await hub.login(session, user)
                    async with session.get(f"{hub.url}/hub/spawn") as r:
                        assert r.status == 200, await r.text()
                        assert "JupyterLab" in await r.text()
            froze = FROZE.findall(hub.log())
    if switch:
        assert froze == []
    else:
        assert len(froze) == 1, froze  # once per process, at the first spawner
        assert int(froze[0]) > 100_000  # the hub's and the imported modules' objects

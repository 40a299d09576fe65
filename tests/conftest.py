"""Shared fixtures: a kubesim per test, reached over real HTTP."""

import pytest
from kubernetes_asyncio import client

from apex_hub.kubesim import KubeSim


@pytest.fixture
async def sim():
    async with KubeSim(kubelet="instant") as s:
        yield s


@pytest.fixture
async def api(sim):
    async with sim.api_client() as api_client:
        yield api_client


@pytest.fixture
def v1(api):
    return client.CoreV1Api(api)

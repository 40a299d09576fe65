"""How much load kubesim itself can take (so that spawner benchmarks measure the spawner).

Prints: create rate with and without schema validation, list time for N pods, the time
for a watch to see a write, and API calls counted by the request log. Not a test.

    python benchmarks/kubesim_throughput.py [--pods 2000]
"""

import argparse
import asyncio
import time

from kubernetes_asyncio import client, watch

from apex_hub.kubesim import KubeSim


def pod(i):
    return {
        "metadata": {"name": f"p{i}", "labels": {"component": "singleuser-server", "i": str(i)}},
        "spec": {"containers": [{"name": "c", "image": "x:1"}]},
    }


async def create_rate(n, validate, concurrency=32):
    async with KubeSim(kubelet=None, validate_schemas=validate) as sim:
        async with sim.api_client() as api:
            v1 = client.CoreV1Api(api)
            sem = asyncio.Semaphore(concurrency)

            async def one(i):
                async with sem:
                    await v1.create_namespaced_pod("default", pod(i))

            start = time.perf_counter()
            await asyncio.gather(*(one(i) for i in range(n)))
            created = time.perf_counter() - start
            start = time.perf_counter()
            items = (
                await v1.list_namespaced_pod("default", label_selector="component=singleuser-server")
            ).items
            listed = time.perf_counter() - start
            assert len(items) == n
            return n / created, listed, sim.counts()


async def watch_latency(samples=50):
    async with KubeSim(kubelet=None, validate_schemas=False) as sim:
        async with sim.api_client() as api:
            v1 = client.CoreV1Api(api)
            rv = (await v1.list_namespaced_config_map("default")).metadata.resource_version
            seen = asyncio.Queue()

            async def watcher():
                w = watch.Watch()
                async for _ev in w.stream(v1.list_namespaced_config_map, "default", resource_version=rv):
                    seen.put_nowait(time.perf_counter())

            task = asyncio.create_task(watcher())
            await asyncio.sleep(0.2)
            lat = []
            for i in range(samples):
                t = time.perf_counter()
                await v1.create_namespaced_config_map("default", {"metadata": {"name": f"c{i}"}, "data": {}})
                lat.append(await seen.get() - t)
            task.cancel()
            lat.sort()
            return lat[len(lat) // 2], lat[int(len(lat) * 0.95)]


async def main(n):
    for validate in (False, True):
        rate, listed, counts = await create_rate(n, validate)
        print(
            f"create pods (schema validation {'on ' if validate else 'off'}): {rate:8.0f} /s   "
            f"list {n} pods by label: {listed * 1000:6.1f} ms   requests logged: {sum(counts.values())}"
        )
    p50, p95 = await watch_latency()
    print(
        f"write -> watch event (create round trip included): p50 {p50 * 1000:.2f} ms, p95 {p95 * 1000:.2f} ms"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--pods", type=int, default=2000)
    asyncio.run(main(parser.parse_args().pods))

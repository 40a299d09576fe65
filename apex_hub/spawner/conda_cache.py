"""Conda environments built once per cluster: a shared, read-only cache (opt-in).

Without it, each user's first start of a profile with ``conda_environments`` builds them into
that user's claim (``conda_build.py`` in the ``conda-environments`` init container): 50 users of
one profile, 50 identical builds. With ``APExSpawner.conda_cache_volume`` set:

* an environment's **cache key** is the SHA-256 of what decides its build: the
  ``environment.yml`` as rendered, the profile's own ``condarc``, the builder and the image (a
  ``venv`` build links the image's Python; a Conda build resolves with the condarc's channels).
* the spawner makes sure a build Job ``apex-conda-<key prefix>`` exists in the hub's namespace
  (a create; 409 means another spawn made it: Jobs are idempotent by name, so 50 concurrent
  spawns make one Job). It mounts the cache read-write at ``conda_cache_path`` and builds into
  ``<cache>/<key>`` in place (Conda prefixes are not relocatable: the cache is mounted at the
  same path in the Job and in every workspace), writing ``.apex-ready`` last;
* every workspace mounts the cache **read-only** at the same path. Its init container uses a
  complete shared build (the kernel spec points at the shared prefix, nothing is built), waits
  for one in progress (``conda_cache_wait``, while its heartbeat moves), and otherwise builds
  per user into the claim exactly as before: a failed or missing Job never stops a start. A
  user's own current build in the claim is kept and used (they may have changed it: the shared
  prefix is read-only), and ``~/.apex/conda/envs/<name>.private`` asks for one.

Why the spawner creates the Job (and not the init container): workspace pods have no API
access to the hub's namespace, and the hub already holds a client; why a volume source rather
than a claim: a PersistentVolumeClaim belongs to one namespace, and every user has their own.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
from pathlib import Path
from typing import Any

from ..profiles import Profile
from . import labels as L
from .workspace import CONDA_INIT, RESTRICTED_CONTAINER, RESTRICTED_POD, Plan, init_resources

CACHE_VOLUME = "apex-conda-cache"
JOB_PREFIX = "apex-conda-"
KEY_ANNOTATION = "apex.esa.int/conda-cache-key"
ENV_ANNOTATION = "apex.esa.int/conda-environment"
COMPONENT = "conda-cache"
JOB_BACKOFF_LIMIT = 1  # one retry (a node lost mid-build); a broken file fails twice, not 7 times
_running: set[asyncio.Task] = set()  # Job creations in flight (a reference keeps them alive)


def cache_key(environment_yml: str, condarc: str | None, builder: str, image: str | None) -> str:
    """What decides a build, hashed: equal keys mean interchangeable prefixes."""
    what = {"environment.yml": environment_yml, "condarc": condarc, "builder": builder, "image": image}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()


def job_name(key: str) -> str:
    return f"{JOB_PREFIX}{key[:20]}"


def cache_keys(spawner, profile: Profile) -> dict[str, str]:
    """Environment name -> cache key (environment files are not templated: the same for everyone)."""
    return {
        e.name: cache_key(e.environment_yml, profile.condarc, spawner.conda_builder, spawner.image)
        for e in profile.conda_environments
    }


def add_to_plan(spawner, plan: Plan, rendered: Profile) -> list[dict]:
    """Mount the cache into the workspace and tell its init container the keys; the Jobs to ensure.

    Nothing happens (and no Job is returned) when the cache is off or the profile has no
    Conda environment.
    """
    if not spawner.conda_cache_volume or not rendered.conda_environments:
        return []
    init = next((c for c in plan.init_containers if c.get("name") == CONDA_INIT), None)
    keys = cache_keys(spawner, rendered)
    if init is None or not keys:
        return []
    path = spawner.conda_cache_path.rstrip("/")
    plan.volumes.append({"name": CACHE_VOLUME, **copy.deepcopy(spawner.conda_cache_volume)})
    mount = {"name": CACHE_VOLUME, "mountPath": path, "readOnly": True}
    plan.volume_mounts.append(dict(mount))  # the server runs its kernels from there
    init["volumeMounts"] = [*init.get("volumeMounts", []), dict(mount)]
    init["env"] = [
        *init.get("env", []),
        {"name": "APEX_CONDA_CACHE", "value": path},
        {"name": "APEX_CONDA_CACHE_KEYS", "value": json.dumps(keys, sort_keys=True)},
        {"name": "APEX_CONDA_CACHE_WAIT", "value": f"{spawner.conda_cache_wait:g}"},
        {"name": "APEX_CONDA_CACHE_STALL", "value": f"{spawner.conda_cache_stall:g}"},
    ]
    by_name = {e.name: e for e in rendered.conda_environments}
    settings = spawner.settings()
    return [
        job_manifest(spawner, name, by_name[name].environment_yml, key, rendered, init_resources(settings))
        for name, key in sorted(keys.items())
    ]


def job_manifest(spawner, name: str, environment_yml: str, key: str, profile: Profile, resources) -> dict:
    """The build Job of one environment (in the hub's namespace)."""
    path = spawner.conda_cache_path.rstrip("/")
    labels = {L.MANAGED_BY: L.MANAGER, "app.kubernetes.io/component": COMPONENT}
    annotations = {KEY_ANNOTATION: key, ENV_ANNOTATION: name, L.PROFILE: profile.slug}
    env = [
        {"name": "APEX_CONDA_CACHE_BUILD", "value": key},
        {"name": "APEX_CONDA_CACHE", "value": path},
        {"name": "APEX_CONDA_NAME", "value": name},
        {"name": "APEX_CONDA_BUILDER", "value": spawner.conda_builder},
        {"name": "APEX_CONDA_SPEC", "value": environment_yml},
    ]
    if profile.condarc is not None:
        env.append({"name": "APEX_CONDARC_TEXT", "value": profile.condarc})
    script = (Path(__file__).parent / "conda_build.py").read_text()
    container: dict[str, Any] = {
        "name": "build",
        "image": spawner.image,
        "command": ["python3", "-c", script],
        "env": env,
        "volumeMounts": [{"name": CACHE_VOLUME, "mountPath": path}],
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "containers": [container],
        "volumes": [{"name": CACHE_VOLUME, **copy.deepcopy(spawner.conda_cache_volume)}],
    }
    if spawner.secure_pod_defaults:
        container["securityContext"] = dict(RESTRICTED_CONTAINER)
        pod_spec["securityContext"] = dict(RESTRICTED_POD)
    if resources:
        container["resources"] = resources
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(key),
            "namespace": spawner.hub_namespace,
            "labels": labels,
            "annotations": annotations,
        },
        "spec": {
            "backoffLimit": JOB_BACKOFF_LIMIT,
            "template": {"metadata": {"labels": labels, "annotations": annotations}, "spec": pod_spec},
        },
    }


def start_jobs(kube, jobs: list[dict], log) -> asyncio.Task | None:
    """Create the missing build Jobs in the background: the spawn does not wait for them (its
    init container falls back to a per-user build), and a failure is only logged."""
    if not jobs:
        return None
    task = asyncio.ensure_future(ensure_jobs(kube, jobs, log))
    _running.add(task)
    task.add_done_callback(_running.discard)
    return task


async def ensure_jobs(kube, jobs: list[dict], log) -> list[bool]:
    """Create each Job unless it exists (409: made by an earlier or a concurrent spawn); which
    were created. A Job that failed stays (so a broken environment is not rebuilt at every
    spawn): delete it to build again."""

    async def one(job: dict) -> bool:
        meta = job["metadata"]
        what = f"conda cache: build Job {meta['namespace']}/{meta['name']} ({meta['annotations'][ENV_ANNOTATION]})"
        try:
            created = await kube.create_if_absent(job)
        except Exception as exc:
            log.warning("%s could not be created (%s); workspaces build it per user", what, exc)
            return False
        if created:
            log.info("%s created", what)
        return created

    return list(await asyncio.gather(*(one(j) for j in jobs)))


def gate_view(pod: dict, volume: dict | None) -> dict:
    """The pod as the isolation gate sees it: without the operator's own cache volume (a
    ``hostPath`` there is the operator's choice, and it is mounted read-only)."""
    if not volume:
        return pod
    spec = pod.get("spec") or {}
    wanted = {"name": CACHE_VOLUME, **volume}
    kept = [v for v in spec.get("volumes") or [] if v != wanted]
    return {**pod, "spec": {**spec, "volumes": kept}}

"""A minimal Job controller: a ``batch/v1`` Job gets a pod, and its status follows the pod's exit.

What it emulates of kube-controller-manager's job controller, for Jobs of one completion
(``completions`` and ``parallelism`` 1, the defaults): at creation the API server's defaults
(``backoffLimit`` 6, ``completions``/``parallelism`` 1, a ``controller-uid`` selector and the
pod labels ``batch.kubernetes.io/job-name`` and ``batch.kubernetes.io/controller-uid``) are
filled in and one pod is made from the template, owned by the Job (deleting the Job deletes its
pods). A pod that ends ``Succeeded`` completes the Job (conditions ``SuccessCriteriaMet`` and
``Complete``); one that ends ``Failed`` counts in ``status.failed`` and is replaced until
``backoffLimit`` is exceeded (conditions ``FailureTarget`` and ``Failed``, reason
``BackoffLimitExceeded``). The process kubelet really runs the pods; with the instant kubelet
they stay Running, so Jobs stay active.

Not emulated: indexed, parallel and suspended Jobs, ``activeDeadlineSeconds``,
``ttlSecondsAfterFinished``, pod failure policies, back-off delays between retries.
"""

from __future__ import annotations

import copy
import logging

from .errors import ApiError
from .store import now_rfc3339

log = logging.getLogger("apex_hub.kubesim.jobs")

JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
CONTROLLER_UID_LABEL = "batch.kubernetes.io/controller-uid"


class JobController:
    def __init__(self, store):
        self.store = store
        self._counted: set[str] = set()  # uids of pods whose end is in their Job's status
        self._subscribed = False

    def start(self) -> None:
        if not self._subscribed:
            self.store.subscribe(self._on_event)
            self._subscribed = True

    @property
    def _jobs(self):
        return self.store.registry.get("batch", "v1", "jobs")

    @property
    def _pods(self):
        return self.store.registry.get("", "v1", "pods")

    def _on_event(self, etype: str, rtype, obj: dict, old: dict | None) -> None:
        # acted on after the write that caused it has been answered, as a controller watching does
        if rtype.key == "jobs.batch" and etype == "ADDED":
            self.store.spawn(self._act(self._admit, obj))
        elif rtype.kind == "Pod" and etype != "DELETED":
            phase = (obj.get("status") or {}).get("phase")
            if phase in ("Succeeded", "Failed") and obj["metadata"].get("ownerReferences"):
                self.store.spawn(self._act(self._pod_changed, obj))

    async def _act(self, step, obj: dict) -> None:
        try:
            step(obj)
        except ApiError as e:  # the Job or its namespace went meanwhile: nothing to do
            log.debug("job controller: %s", e)
        except Exception:
            log.exception("job controller: %s %s", obj.get("kind"), obj["metadata"].get("name"))

    # -- a new Job ----------------------------------------------------------------------------

    def _admit(self, job: dict) -> None:
        meta = job["metadata"]
        uid = meta["uid"]
        labels = {JOB_NAME_LABEL: meta["name"], CONTROLLER_UID_LABEL: uid}

        def defaults(obj):
            spec = obj.setdefault("spec", {})
            spec.setdefault("backoffLimit", 6)
            spec.setdefault("completions", 1)
            spec.setdefault("parallelism", 1)
            spec.setdefault("completionMode", "NonIndexed")
            spec.setdefault("suspend", False)
            spec.setdefault("selector", {"matchLabels": {CONTROLLER_UID_LABEL: uid}})
            tmeta = spec.setdefault("template", {}).setdefault("metadata", {})
            tmeta["labels"] = {**(tmeta.get("labels") or {}), **labels}
            obj["status"] = {"startTime": now_rfc3339(), "active": 0, "ready": 0}

        job = self.store.update(self._jobs, meta["namespace"], meta["name"], defaults)
        self._start_pod(job)

    def _start_pod(self, job: dict) -> None:
        meta, template = job["metadata"], copy.deepcopy(job["spec"]["template"])
        pod_meta = template.get("metadata") or {}
        pod_meta.pop("name", None)
        pod_meta["generateName"] = f"{meta['name']}-"
        pod_meta["ownerReferences"] = [
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "name": meta["name"],
                "uid": meta["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        try:
            self.store.create(
                self._pods,
                meta["namespace"],
                {"apiVersion": "v1", "kind": "Pod", **template, "metadata": pod_meta},
            )
        except ApiError as e:  # e.g. a missing ServiceAccount: the Job stays active, as in a cluster
            log.warning("job controller: no pod for Job %s/%s: %s", meta["namespace"], meta["name"], e)
            self.store.record_event(
                job, "FailedCreate", f"Error creating: {e}", type="Warning", component="job-controller"
            )
            return
        self._write(job, lambda s: s.__setitem__("active", s.get("active", 0) + 1))

    # -- a pod of a Job ends ------------------------------------------------------------------

    def _pod_changed(self, pod: dict) -> None:
        meta = pod["metadata"]
        owner = next(
            (r for r in meta.get("ownerReferences") or [] if r.get("kind") == "Job" and r.get("controller")),
            None,
        )
        phase = (pod.get("status") or {}).get("phase")
        if owner is None or phase not in ("Succeeded", "Failed") or meta["uid"] in self._counted:
            return
        job = self.store._raw(self._jobs, meta["namespace"], owner["name"])
        if job is None or job["metadata"]["uid"] != owner["uid"] or _finished(job):
            return
        self._counted.add(meta["uid"])
        now = now_rfc3339()
        if phase == "Succeeded":

            def succeeded(status):
                status.update(active=max(0, status.get("active", 1) - 1), succeeded=1, completionTime=now)
                status["conditions"] = [_condition("SuccessCriteriaMet", now), _condition("Complete", now)]

            self._write(job, succeeded)
            self.store.record_event(job, "Completed", "Job completed", component="job-controller")
            return
        failed = (job.get("status") or {}).get("failed", 0) + 1
        if failed > job["spec"].get("backoffLimit", 6):

            def gave_up(status):
                status.update(active=max(0, status.get("active", 1) - 1), failed=failed)
                reason, message = "BackoffLimitExceeded", "Job has reached the specified backoff limit"
                status["conditions"] = [
                    _condition("FailureTarget", now, reason, message),
                    _condition("Failed", now, reason, message),
                ]

            self._write(job, gave_up)
            self.store.record_event(
                job,
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
                type="Warning",
                component="job-controller",
            )
            return
        self._write(job, lambda s: s.update(active=max(0, s.get("active", 1) - 1), failed=failed))
        self._start_pod(self.store._raw(self._jobs, meta["namespace"], owner["name"]))

    def _write(self, job: dict, mutate) -> None:
        meta = job["metadata"]
        self.store.update(
            self._jobs, meta["namespace"], meta["name"], lambda o: mutate(o.setdefault("status", {}))
        )


def _finished(job: dict) -> bool:
    conditions = (job.get("status") or {}).get("conditions") or []
    return any(c["type"] in ("Complete", "Failed") and c.get("status") == "True" for c in conditions)


def _condition(ctype: str, now: str, reason: str | None = None, message: str | None = None) -> dict:
    condition = {"type": ctype, "status": "True", "lastProbeTime": now, "lastTransitionTime": now}
    if reason:
        condition.update(reason=reason, message=message or "")
    return condition

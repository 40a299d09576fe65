"""kubesim standalone (``apex-hub kubesim``) driven by a real kubectl."""

import json
import shutil
import subprocess
import sys
import time

import pytest

from tests.helpers.hub import free_port

KUBECTL = shutil.which("kubectl")
pytestmark = [pytest.mark.kubectl, pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")]

MANIFESTS = """
apiVersion: v1
kind: Namespace
metadata:
  name: team-a
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: team-a
  labels: {app: demo}
data:
  mode: "{mode}"
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: reader
  namespace: team-a
rules:
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list"]
"""


@pytest.fixture(scope="module")
def standalone(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("kubectl")
    kubeconfig = tmp / "kubeconfig"
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "apex_hub.cli",
            "kubesim",
            "--port",
            str(port),
            "--kubeconfig",
            str(kubeconfig),
            "--kubelet",
            "instant",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    while not kubeconfig.exists():  # written once it listens (pytest-timeout guards a hang)
        assert proc.poll() is None, f"kubesim exited with {proc.returncode}:\n{proc.stdout.read()}"
        time.sleep(0.1)
    yield kubeconfig, tmp
    proc.terminate()
    assert proc.wait(120) == 0
    assert "kubesim: stopped" in proc.stdout.read()


def kubectl(kubeconfig, *args, stdin=None, check=True):
    r = subprocess.run(
        [KUBECTL, "--kubeconfig", str(kubeconfig), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if check:
        assert r.returncode == 0, r.stderr
    return r


def test_kubectl_get_apply_delete(standalone):
    kubeconfig, tmp = standalone
    names = kubectl(kubeconfig, "get", "namespaces", "-o", "name").stdout.split()
    assert "namespace/default" in names and "namespace/kube-system" in names
    out = kubectl(kubeconfig, "apply", "-f", "-", stdin=MANIFESTS.replace("{mode}", "one")).stdout
    assert "namespace/team-a created" in out and "configmap/settings created" in out
    out = kubectl(kubeconfig, "apply", "-f", "-", stdin=MANIFESTS.replace("{mode}", "two")).stdout
    assert "configmap/settings configured" in out and "role.rbac.authorization.k8s.io/reader unchanged" in out
    cm = json.loads(kubectl(kubeconfig, "get", "configmap", "settings", "-n", "team-a", "-o", "json").stdout)
    assert cm["data"] == {"mode": "two"}
    out = kubectl(
        kubeconfig,
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        "-",
        stdin=MANIFESTS.replace("{mode}", "three"),
    ).stdout
    assert "serverside-applied" in out
    assert (
        kubectl(
            kubeconfig, "get", "cm", "-n", "team-a", "-l", "app=demo", "-o", "jsonpath={.items[0].data.mode}"
        ).stdout
        == "three"
    )
    table = kubectl(kubeconfig, "get", "roles", "-n", "team-a").stdout
    assert table.split()[:2] == ["NAME", "AGE"] and "reader" in table


def test_kubectl_errors_come_from_the_server(standalone):
    kubeconfig, _ = standalone
    r = kubectl(kubeconfig, "get", "pod", "ghost", check=False)
    assert r.returncode != 0 and 'pods "ghost" not found' in r.stderr
    bad = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Bad_Name\ndata: {}\n"
    r = kubectl(kubeconfig, "apply", "-f", "-", stdin=bad, check=False)
    assert r.returncode != 0 and "Invalid value" in r.stderr


def test_kubectl_pods_run_and_namespace_cascade(standalone):
    kubeconfig, _ = standalone
    kubectl(kubeconfig, "create", "namespace", "scratch")
    kubectl(kubeconfig, "run", "web", "-n", "scratch", "--image=nginx:1.27", "--restart=Never")
    kubectl(kubeconfig, "wait", "-n", "scratch", "--for=condition=Ready", "pod/web", "--timeout=300s")
    table = kubectl(kubeconfig, "get", "pods", "-n", "scratch").stdout
    assert "Running" in table and "1/1" in table
    kubectl(kubeconfig, "delete", "namespace", "scratch", "--wait=true", "--timeout=300s")
    r = kubectl(kubeconfig, "get", "namespace", "scratch", check=False)
    assert "not found" in r.stderr


TABLE_OBJECTS = """
apiVersion: v1
kind: Namespace
metadata: {name: tables}
---
apiVersion: v1
kind: Secret
metadata: {name: token, namespace: tables}
type: kubernetes.io/basic-auth
stringData: {username: u, password: p}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: tables}
data: {a: "1", b: "2", c: "3"}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: home, namespace: tables}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 10Gi}}
"""


def test_kubectl_tables_have_the_real_columns(standalone):
    """Found by local mode users: Secrets, ConfigMaps, PVCs and Events showed only NAME and AGE."""
    kubeconfig, _ = standalone
    kubectl(kubeconfig, "apply", "-f", "-", stdin=TABLE_OBJECTS)

    def table(*args):
        lines = kubectl(kubeconfig, "get", *args, "-n", "tables").stdout.splitlines()
        return [line.split() for line in lines]

    secrets = table("secrets")
    assert secrets[0] == ["NAME", "TYPE", "DATA", "AGE"] and secrets[1][:3] == [
        "token",
        "kubernetes.io/basic-auth",
        "2",
    ]
    configmaps = table("configmaps", "settings")
    assert configmaps[0] == ["NAME", "DATA", "AGE"] and configmaps[1][:2] == ["settings", "3"]
    pvc = kubectl(kubeconfig, "get", "pvc", "-n", "tables").stdout.splitlines()
    # as kubectl prints it against kube-apiserver 1.35 (checked on the real lane)
    assert pvc[0].split() == [
        "NAME",
        "STATUS",
        "VOLUME",
        "CAPACITY",
        "ACCESS",
        "MODES",
        "STORAGECLASS",
        "VOLUMEATTRIBUTESCLASS",
        "AGE",
    ]
    row = pvc[1].split()
    assert row[0] == "home" and row[1] == "Bound" and row[2].startswith("pvc-")
    assert row[3:7] == ["10Gi", "RWO", "standard", "<unset>"]

    kubectl(kubeconfig, "run", "web", "-n", "tables", "--image=nginx:1.27", "--restart=Never")
    kubectl(kubeconfig, "wait", "-n", "tables", "--for=condition=Ready", "pod/web", "--timeout=300s")
    events = kubectl(kubeconfig, "get", "events", "-n", "tables").stdout.splitlines()
    assert events[0].split() == ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    reasons = [line.split()[2] for line in events[1:]]
    assert reasons == ["Scheduled", "Pulling", "Pulled", "Created", "Started"]  # in the order they happened
    assert all(line.split()[3] == "pod/web" for line in events[1:])

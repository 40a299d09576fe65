"""kubesim standalone (``apex-hub kubesim``) driven by a real kubectl."""

import asyncio
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
    proc = subprocess.Popen([sys.executable, "-m", "apex_hub.cli", "kubesim", "--port", str(port),
                             "--kubeconfig", str(kubeconfig), "--kubelet", "instant"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 30
    while not kubeconfig.exists() and time.time() < deadline:
        time.sleep(0.1)
    assert kubeconfig.exists(), "kubesim did not write its kubeconfig"
    yield kubeconfig, tmp
    proc.terminate()
    assert proc.wait(10) == 0
    assert "kubesim: stopped" in proc.stdout.read()


def kubectl(kubeconfig, *args, stdin=None, check=True):
    r = subprocess.run([KUBECTL, "--kubeconfig", str(kubeconfig), *args], input=stdin, capture_output=True,
                       text=True, timeout=60)
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
    out = kubectl(kubeconfig, "apply", "--server-side", "--force-conflicts", "-f", "-",
                  stdin=MANIFESTS.replace("{mode}", "three")).stdout
    assert "serverside-applied" in out
    assert kubectl(kubeconfig, "get", "cm", "-n", "team-a", "-l", "app=demo", "-o",
                   "jsonpath={.items[0].data.mode}").stdout == "three"
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
    kubectl(kubeconfig, "wait", "-n", "scratch", "--for=condition=Ready", "pod/web", "--timeout=20s")
    table = kubectl(kubeconfig, "get", "pods", "-n", "scratch").stdout
    assert "Running" in table and "1/1" in table
    kubectl(kubeconfig, "delete", "namespace", "scratch", "--wait=true", "--timeout=30s")
    r = kubectl(kubeconfig, "get", "namespace", "scratch", check=False)
    assert "not found" in r.stderr

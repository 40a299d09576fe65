"""Shared fixtures: a kubesim per test, reached over real HTTP; and the cluster lane of the run."""

import asyncio
import functools
import os
import shutil
import signal
import sys
from pathlib import Path

import pytest

from apex_hub.localpod import SLOW_IMPORT

# jsonschema's optional checker of the "iri" formats (rfc3987-syntax) builds some 35 Earley parsers when
# imported: a second or more of CPU for this process, which imports jsonschema through kubernetes_asyncio
# before the first test. No schema of the suite (Kubernetes', ours, Jupyter's) uses those formats, and
# no validator here checks formats; apex_hub.localpod leaves it out of every local-mode server likewise.
sys.modules.setdefault(SLOW_IMPORT, None)  # an import of it raises ImportError: jsonschema goes without

from kubernetes_asyncio import client  # noqa: E402

from apex_hub.kubesim import KubeSim  # noqa: E402

LANES_HELP = (
    "the Kubernetes backend of this run: kubesim (default, fast), real (etcd + kube-apiserver + "
    "kube-controller-manager built from Go modules, started once on loopback) or kubeconfig:PATH "
    "(any cluster, e.g. k3s or kind, through an admin kubeconfig)"
)
REAL_LANE_ONLY = "real-cluster test: run with --cluster real (or --cluster kubeconfig:PATH)"


def pytest_addoption(parser):
    parser.addoption("--cluster", default="kubesim", metavar="kubesim|real|kubeconfig:PATH", help=LANES_HELP)


def _interruptible_children() -> None:
    """The processes the suite starts get SIGINT's default action, whatever this run inherited.

    A run started as a background job of a non-interactive shell (``cmd &``, as scripts/test.sh starts
    the z2jh lane, and as CI may start the whole run) inherits SIGINT *ignored*, and exec keeps an
    ignored signal ignored: every process the suite starts would then ignore SIGINT too. JupyterHub
    stops its managed services with SIGINT, then waits ``interrupt_timeout`` (10 s) for each before
    SIGTERM; a hub that started its services with SIGINT still ignored (it installs its own handler
    only after they run) took 15 s or more to stop, in every test that stops one. With a handler in
    this process, children start with the default action (exec resets handled signals), as they do
    when the suite is run in the foreground.
    """
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_configure(config):
    _interruptible_children()
    lane = config.getoption("--cluster")
    if lane not in ("kubesim", "real") and not lane.startswith("kubeconfig:"):
        raise pytest.UsageError(f"--cluster {lane!r}: expected kubesim, real or kubeconfig:PATH")
    if lane.startswith("kubeconfig:") and not Path(lane.split(":", 1)[1]).expanduser().is_file():
        raise pytest.UsageError(f"--cluster {lane!r}: no such kubeconfig file")
    config.addinivalue_line(
        "markers", "realcluster: needs --cluster real or kubeconfig:PATH (skipped otherwise)"
    )


def pytest_collection_modifyitems(config, items):
    if config.getoption("--cluster") != "kubesim":
        return
    skip = pytest.mark.skip(reason=REAL_LANE_ONLY)
    for item in items:
        if "realcluster" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def cluster_lane(pytestconfig) -> str:
    """``kubesim``, ``real`` or ``kubeconfig:PATH``, as given with ``--cluster``."""
    return pytestconfig.getoption("--cluster")


@pytest.fixture(scope="session")
def real_cluster(cluster_lane, tmp_path_factory):
    """The run's real API server, with the hub's ServiceAccount installed (tests.helpers.cluster).

    ``real``: our control plane, started once per session and stopped at its end (skipped, with
    the reason, when it cannot be built here, e.g. no Go toolchain).
    """
    from tests.helpers.cluster import Cluster
    from tests.helpers.controlplane import ControlPlane, ControlPlaneUnavailable

    if cluster_lane == "kubesim":
        pytest.skip(REAL_LANE_ONLY)
    workdir = tmp_path_factory.mktemp("cluster")
    control_plane = None
    if cluster_lane == "real":
        try:
            control_plane = ControlPlane.build_and_start(workdir / "controlplane")
        except ControlPlaneUnavailable as e:
            pytest.skip(f"real lane unavailable: {e}")
        cluster = Cluster(control_plane.admin_kubeconfig, workdir, control_plane=control_plane)
    else:
        cluster = Cluster(Path(cluster_lane.split(":", 1)[1]).expanduser(), workdir, name=cluster_lane)
    try:
        asyncio.run(cluster.install_hub())
        yield cluster
    finally:
        if control_plane is not None:
            control_plane.stop()
            shutil.rmtree(workdir / "controlplane" / "etcd", ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def _one_schema_validator_per_run():
    """Every kubesim of the run shares one Kubernetes schema validator.

    ``schema_validator()`` compiles each kind's JSON schema (and parses the large definitions
    file) on first use, into a cache of its own: each new kubesim paid that again, about 0.5 s of
    CPU per test on this machine, in every test that writes a few kinds. The validator is pure
    (same schemas, same answers), so one per run checks exactly as before.
    """
    import apex_hub.kubesim.sim as kubesim

    made = kubesim.schema_validator
    kubesim.schema_validator = functools.cache(made)
    yield
    kubesim.schema_validator = made


def forget_kubernetes_clients() -> None:
    """Drop what KubeSpawner and kubernetes_asyncio keep between spawners, process-wide.

    KubeSpawner caches ``load_config`` by API host (the call sets the *global* default
    configuration), keeps one API client per event loop and argument list (``shared_client``),
    and class-level reflectors keyed by kind and namespace. A test's kubesim listens on a port
    the OS picks: when it is the port of an earlier test's (now stopped) kubesim, or a loop
    or reflector outlives its test, a new spawner would quietly talk to the old kubesim.
    Nothing is imported here: what was never imported holds nothing.
    """
    clients = sys.modules.get("kubespawner.clients")
    if clients is not None:
        clients.load_config.cache_clear()
        clients._client_cache.clear()  # their closing tasks still close them with their loop
    spawner = sys.modules.get("kubespawner.spawner")
    if spawner is not None:
        # a reflector left by a test whose loop is gone cannot be stopped, only forgotten
        spawner.KubeSpawner.reflectors.clear()


@pytest.fixture(autouse=True)
def _per_test_kubernetes_clients():
    """Every test's Kubernetes clients are its own: none is reused from an earlier test (see
    :func:`forget_kubernetes_clients`), and the default kubeconfig a test points in-process clients
    at (``KubeSim.make_default``) is put back afterwards."""
    saved = os.environ.get("KUBECONFIG")
    kube_config = sys.modules.get("kubernetes_asyncio.config.kube_config")
    saved_location = kube_config.KUBE_CONFIG_DEFAULT_LOCATION if kube_config is not None else None
    forget_kubernetes_clients()
    yield
    forget_kubernetes_clients()
    if saved is None:
        os.environ.pop("KUBECONFIG", None)
    else:
        os.environ["KUBECONFIG"] = saved
    kube_config = sys.modules.get("kubernetes_asyncio.config.kube_config")
    if kube_config is not None:  # as the library computes it at import when it was imported meanwhile
        kube_config.KUBE_CONFIG_DEFAULT_LOCATION = saved_location or saved or "~/.kube/config"


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

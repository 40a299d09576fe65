"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager.

Why: kubesim enforces no RBAC and no admission; a real API server does. The binaries come from
``tests/controlplane/build.sh`` (built from Go modules, cached by version). Everything listens on
127.0.0.1 with TLS from a throwaway CA; nothing is sent off-host.

    cp = ControlPlane.build_and_start(workdir)   # or scripts/controlplane.sh for humans
    ...                                           # cp.admin_kubeconfig, cp.url, cp.ca_path
    cp.stop()
"""

from __future__ import annotations

import datetime
import ipaddress
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "tests" / "controlplane" / "build.sh"
NO_GO = 3  # build.sh's exit code when there is no Go toolchain
#: Service ClusterIPs on loopback: no kube-proxy runs, but if anything ever dials one it stays on-host.
SERVICE_CIDR = "127.0.100.0/24"
ADMISSION_PLUGINS = (
    "NamespaceLifecycle",
    "ServiceAccount",
    "ResourceQuota",
    "LimitRanger",
    "PodSecurity",
    "NodeRestriction",
    "ValidatingAdmissionPolicy",
)
READY_TIMEOUT = 180.0  # generous: two cores shared with other test runs


class ControlPlaneUnavailable(RuntimeError):
    """The control plane cannot be built or started here (e.g. no Go toolchain): skip, say why."""


def build() -> Path:
    """The directory with the binaries: built once per version (see build.sh), then reused."""
    try:
        done = subprocess.run([str(BUILD_SCRIPT)], capture_output=True, text=True)
    except OSError as e:
        raise ControlPlaneUnavailable(f"cannot run {BUILD_SCRIPT}: {e}") from None
    if done.returncode == NO_GO:
        raise ControlPlaneUnavailable(done.stderr.strip())
    if done.returncode != 0:
        raise RuntimeError(f"{BUILD_SCRIPT} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


from tests.helpers.hub import free_port  # noqa: E402 - one allocator of ports for the whole run

# -- certificates ------------------------------------------------------------------------------


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(cn: str, orgs=()) -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
        + [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    )


class CertificateAuthority:
    """A throwaway CA: the API server's serving certificate and every client certificate."""

    def __init__(self):
        self.key = _key()
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name("apex-hub test CA"))
            .issuer_name(_name("apex-hub test CA"))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=7))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
            )
            .sign(self.key, hashes.SHA256())
        )

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, cn: str, orgs=(), *, server_names=(), server_ips=()) -> tuple[bytes, bytes]:
        """(certificate PEM, key PEM): a client certificate, or a serving one with SANs."""
        key = _key()
        now = datetime.datetime.now(datetime.UTC)
        usage = (
            x509.ExtendedKeyUsageOID.SERVER_AUTH
            if (server_names or server_ips)
            else x509.ExtendedKeyUsageOID.CLIENT_AUTH
        )
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(cn, orgs))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=7))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if server_names or server_ips:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName(n) for n in server_names]
                    + [x509.IPAddress(ipaddress.ip_address(ip)) for ip in server_ips]
                ),
                critical=False,
            )
        cert = builder.sign(self.key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


def write_kubeconfig(
    path: Path,
    url: str,
    ca_path: Path,
    *,
    cert: Path | None = None,
    key: Path | None = None,
    token: str | None = None,
    user: str = "admin",
    namespace: str = "default",
) -> Path:
    creds = {"token": token} if token else {"client-certificate": str(cert), "client-key": str(key)}
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "preferences": {},
                "clusters": [
                    {
                        "name": "apex-controlplane",
                        "cluster": {"server": url, "certificate-authority": str(ca_path)},
                    }
                ],
                "users": [{"name": user, "user": creds}],
                "contexts": [
                    {
                        "name": user,
                        "context": {"cluster": "apex-controlplane", "user": user, "namespace": namespace},
                    }
                ],
                "current-context": user,
            },
            sort_keys=False,
        )
    )
    path.chmod(0o600)
    return path


# -- the processes ----------------------------------------------------------------------------


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager, started from ``bin_dir`` under ``workdir``."""

    def __init__(self, bin_dir: Path, workdir: Path):
        self.bin_dir, self.workdir = Path(bin_dir), Path(workdir)
        self.pki = self.workdir / "pki"
        self.procs: dict[str, subprocess.Popen] = {}
        self.port = 0
        self.ca: CertificateAuthority | None = None

    @classmethod
    def build_and_start(cls, workdir: Path) -> ControlPlane:
        cp = cls(build(), workdir)
        try:
            cp.start()
        except BaseException:
            cp.stop()
            raise
        return cp

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_path(self) -> Path:
        return self.pki / "ca.crt"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.workdir / "admin.kubeconfig"

    @property
    def version(self) -> str:
        info = (self.bin_dir / "BUILD").read_text().split()
        return dict(zip(info[::2], info[1::2])).get("kubernetes", "?")

    def client_certificate(self, name: str, cn: str, orgs=()) -> tuple[Path, Path]:
        """Issue a client certificate (e.g. a node's: CN=system:node:<n>, O=system:nodes)."""
        cert, key = self.ca.issue(cn, orgs)
        return self._write(f"{name}.crt", cert), self._write(f"{name}.key", key)

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.pki.mkdir(exist_ok=True)
        self._make_pki()
        etcd_port, peer_port, self.port = free_port(), free_port(), free_port()
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        self._spawn(
            "etcd",
            [
                "--name=apex",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-cluster=apex=http://127.0.0.1:{peer_port}",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        self._wait(lambda: _http_ok(f"{etcd_url}/health"), "etcd")
        p = self.pki
        self._spawn(
            "kube-apiserver",
            [
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.port}",
                f"--tls-cert-file={p / 'apiserver.crt'}",
                f"--tls-private-key-file={p / 'apiserver.key'}",
                f"--client-ca-file={self.ca_path}",
                f"--service-account-key-file={p / 'sa.pub'}",
                f"--service-account-signing-key-file={p / 'sa.key'}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=Node,RBAC",
                f"--enable-admission-plugins={','.join(ADMISSION_PLUGINS)}",
                # the default reconciler would publish 127.0.0.1 in the "kubernetes" Endpoints, which
                # validation refuses for loopback: nothing here needs that Service
                "--endpoint-reconciler-type=none",
                f"--cert-dir={p}",
                "--profiling=false",
                "--v=1",
            ],
        )
        self._write_kubeconfigs()
        self._wait(self._ready, "kube-apiserver")
        self._spawn(
            "kube-controller-manager",
            [
                f"--kubeconfig={self.workdir / 'controller-manager.kubeconfig'}",
                f"--authentication-kubeconfig={self.workdir / 'controller-manager.kubeconfig'}",
                f"--authorization-kubeconfig={self.workdir / 'controller-manager.kubeconfig'}",
                "--bind-address=127.0.0.1",
                "--secure-port=0",
                "--leader-elect=false",
                "--use-service-account-credentials=true",
                f"--root-ca-file={self.ca_path}",
                f"--service-account-private-key-file={p / 'sa.key'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--profiling=false",
                "--v=1",
            ],
        )

    def stop(self) -> None:
        """SIGTERM in reverse start order, SIGKILL after a grace period; no process left behind."""
        for _name, proc in reversed(list(self.procs.items())):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.procs.clear()

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with {proc.returncode}; last log lines:\n{self.log_tail(name)}"
                )

    def log_tail(self, name: str, lines: int = 40) -> str:
        try:
            return "\n".join((self.workdir / f"{name}.log").read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    # -- internals ----------------------------------------------------------------------------

    def _write(self, name: str, data: bytes) -> Path:
        path = self.pki / name
        path.write_bytes(data)
        path.chmod(0o600)
        return path

    def _make_pki(self) -> None:
        self.ca = CertificateAuthority()
        self._write("ca.crt", self.ca.pem)
        service_ip = str(next(ipaddress.ip_network(SERVICE_CIDR).hosts()))
        cert, key = self.ca.issue(
            "kube-apiserver",
            server_ips=("127.0.0.1", service_ip),
            server_names=(
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ),
        )
        self._write("apiserver.crt", cert)
        self._write("apiserver.key", key)
        sa = _key()
        self._write("sa.key", _pem_key(sa))
        self._write(
            "sa.pub",
            sa.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        )
        self.client_certificate("admin", "apex-admin", ("system:masters",))
        self.client_certificate("controller-manager", "system:kube-controller-manager")

    def _write_kubeconfigs(self) -> None:
        for name in ("admin", "controller-manager"):
            write_kubeconfig(
                self.workdir / f"{name}.kubeconfig",
                self.url,
                self.ca_path,
                cert=self.pki / f"{name}.crt",
                key=self.pki / f"{name}.key",
                user=name,
            )

    def _spawn(self, name: str, args: list[str]) -> None:
        with open(self.workdir / f"{name}.log", "ab") as out:
            self.procs[name] = subprocess.Popen(
                [str(self.bin_dir / name), *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def _wait(self, ready, what: str) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while not ready():
            self.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} not ready after {READY_TIMEOUT:.0f}s:\n{self.log_tail(what)}")
            time.sleep(0.2)

    def _ready(self) -> bool:
        context = ssl.create_default_context(cafile=str(self.ca_path))
        context.load_cert_chain(self.pki / "admin.crt", self.pki / "admin.key")
        return _http_ok(f"{self.url}/readyz", context)


def _http_ok(url: str, context=None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5, context=context) as response:
            return response.status == 200
    except OSError:
        return False


def main(argv=None) -> int:
    """``scripts/controlplane.sh``: start it in the foreground, print the kubeconfig, Ctrl-C stops it."""
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", help="state directory (default: a temporary one, deleted on exit)")
    args = parser.parse_args(argv)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="apex-controlplane-"))
    try:
        cp = ControlPlane.build_and_start(workdir)
    except ControlPlaneUnavailable as e:
        print(f"controlplane: {e}", file=sys.stderr)
        return NO_GO
    print(
        f"Kubernetes {cp.version} at {cp.url}\nexport KUBECONFIG={cp.admin_kubeconfig}\nCtrl-C stops it.",
        flush=True,
    )
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    try:
        while not stop:
            cp.check_alive()
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        cp.stop()
        if not args.workdir:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

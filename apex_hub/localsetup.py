"""What local mode needs from the machine, where it looks for it, and the command that installs it.

Python: the packages of the ``local`` extra (``pip install "apex-hub[local]"``: JupyterLab, the
Jupyter server and ipykernel for the single-user servers). Node.js: JupyterHub's proxy
(configurable-http-proxy) and, for the OIDC login, oidc-provider; both are npm packages, looked up
where ``npm`` puts them: ``--node-modules DIR``, ``$APEX_HUB_NODE_MODULES``, ``./node_modules``, the
source checkout's ``node_modules``, then (the proxy only) PATH.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

from .localidp.launcher import NODE_MODULES_ENV, OIDC_PROVIDER_VERSION

#: the ``local`` extra's import names (the packages a single-user server imports)
PYTHON_MODULES = {
    "jupyterlab": "jupyterlab",
    "jupyter_server": "jupyter-server",
    "ipykernel": "ipykernel",
    "jupyter_server_terminals": "jupyter-server-terminals",
}
PIP_COMMAND = 'pip install "apex-hub[local]"'
PROXY_PACKAGE = "configurable-http-proxy@5"
NPM_COMMAND = f"npm install {PROXY_PACKAGE} oidc-provider@{OIDC_PROVIDER_VERSION}"
CHECKOUT = Path(__file__).resolve().parents[1]  # the repository root when run from a source checkout


class MissingPiece(SystemExit):
    """Local mode cannot start: the message says what is missing and the command that installs it."""


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken install, or a module blocked in sys.modules
        return False


def missing_python_packages() -> list[str]:
    """Distribution names of the ``local`` extra that this interpreter cannot import."""
    return [dist for module, dist in PYTHON_MODULES.items() if not _importable(module)]


def check_python() -> None:
    missing = missing_python_packages()
    if missing:
        raise MissingPiece(
            f"apex-hub local: the single-user server needs {', '.join(missing)}, not installed in "
            f"this environment; run: {PIP_COMMAND}"
        )


def node_modules_candidates(node_modules: str | os.PathLike | None = None) -> list[Path]:
    """Where npm packages are looked for, in order (the given directory, the environment, ./, the checkout)."""
    found: list[Path] = []
    for candidate in (node_modules, os.environ.get(NODE_MODULES_ENV)):
        if candidate:
            found.append(Path(candidate).expanduser().resolve())
    found += [Path.cwd() / "node_modules", CHECKOUT / "node_modules"]
    unique: list[Path] = []
    for path in found:
        if path not in unique:
            unique.append(path)
    return unique


def check_node_modules(node_modules: str | os.PathLike | None) -> None:
    """An explicitly given directory must exist (a typo should not silently fall back elsewhere)."""
    if node_modules and not Path(node_modules).expanduser().is_dir():
        raise MissingPiece(
            f"apex-hub local: --node-modules {node_modules}: no such directory (it is the "
            f"node_modules directory that `{NPM_COMMAND}` creates)"
        )


def find_proxy(node_modules: str | os.PathLike | None = None) -> str | None:
    """configurable-http-proxy: in the node_modules candidates' ``.bin``, else on PATH."""
    for directory in node_modules_candidates(node_modules):
        exe = directory / ".bin" / "configurable-http-proxy"
        if os.access(exe, os.X_OK):
            return str(exe)
    return shutil.which("configurable-http-proxy")


def proxy_or_exit(node_modules: str | os.PathLike | None = None) -> str:
    proxy = find_proxy(node_modules)
    if proxy is not None:
        return proxy
    where = ", ".join(str(d / ".bin") for d in node_modules_candidates(node_modules))
    node = "" if shutil.which("node") else " Node.js 20+ is needed first (e.g. apt-get install nodejs npm)."
    raise MissingPiece(
        f"apex-hub local: configurable-http-proxy (JupyterHub's proxy, an npm package) not found "
        f"in {where} or on PATH.{node} Run, in the directory you start apex-hub local from: "
        f"{NPM_COMMAND}   (or pass --node-modules DIR / set ${NODE_MODULES_ENV})"
    )


def oidc_hint() -> str:
    return f"run {NPM_COMMAND} (or pass --node-modules DIR / set ${NODE_MODULES_ENV})"

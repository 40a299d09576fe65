"""Local mode from an installed wheel, outside the source tree: what a ``pip install "apex-hub[local]"`` user gets.

Builds the wheel (``pip wheel --no-deps``) from a copy of the working tree, installs it into a fresh venv
under a temporary directory and runs ``apex-hub local`` from there, with the npm packages in
``./node_modules`` of the directory it is started from (where ``npm install`` puts them). The venv
reaches the suite's already installed dependencies through a ``.pth`` line (a full download of the
``local`` extra takes minutes); what the extra declares is checked in the wheel's metadata instead.
apex_hub itself comes from the wheel: the suite's editable install is not on that path.
"""

from __future__ import annotations

import email
import ensurepip
import os
import re
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.helpers.hub import free_port
from tests.test_local_mode import (
    CHROMIUM,
    CHROMIUM_ARGS,
    ROOT,
    LocalMode,
    Tour,
    browser_or_skip,
    fresh_shots,
    stop_with_ctrl_c,
)

pytestmark = pytest.mark.process

SHOTS = ROOT / "test-artifacts" / "local-mode-wheel"
SKIP = {
    ".git",
    ".venv",
    ".venv-z2jh",
    "node_modules",
    "test-artifacts",
    "build",
    "dist",
    "__pycache__",
    ".pytest_cache",
}


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory) -> Path:
    """A venv outside the source tree with the apex-hub wheel installed (no editable install in sight)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(
        ROOT, src, ignore=lambda d, names: [n for n in names if n in SKIP or n.endswith(".egg-info")]
    )
    dist = tmp / "dist"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(src)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    wheel = next(dist.glob("apex_hub-*.whl"))
    venv = tmp / "venv"
    _make_venv(venv)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    suite = [p for p in site.getsitepackages() if Path(p).is_relative_to(sys.prefix)]
    (Path(purelib) / "_suite_site_packages.pth").write_text("".join(f"{p}\n" for p in suite))
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return venv


def _make_venv(venv: Path) -> None:
    """``python -m venv``, with the same pip in it, in a fraction of the time.

    ``venv`` installs pip through ensurepip, which byte-compiles all of pip: some 3 s of the set-up on
    a loaded machine. Here the venv is made without pip, and ensurepip's own bundled pip wheel is put in
    by the suite's pip, uncompiled (its modules compile when first imported, as any).
    """
    bundled = sorted((Path(ensurepip.__file__).parent / "_bundled").glob("pip-*.whl"))
    if not bundled:  # an ensurepip without its wheels (some distributions split it off): venv's own way
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
        return
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    pip = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q"]
        + ["--no-compile", "--no-deps", "--no-index", str(bundled[-1])],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert pip.returncode == 0, pip.stdout + pip.stderr


def _wheel_of(venv: Path) -> Path:
    return next((venv.parent / "dist").glob("apex_hub-*.whl"))


def test_the_wheel_carries_local_mode(wheel_venv):
    with zipfile.ZipFile(_wheel_of(wheel_venv)) as whl:
        names = set(whl.namelist())
        meta = email.message_from_bytes(whl.read(next(n for n in names if n.endswith(".dist-info/METADATA"))))
    for data in (
        "apex_hub/localdata/profiles.yml",
        "apex_hub/localdata/culling.yaml",
        "apex_hub/localdata/quotas.yaml",
        "apex_hub/localdata/jupyter-config/labconfig/page_config.json",
        "apex_hub/localidp/provider.mjs",
        "apex_hub/branding/apex-theme/logo.svg",
        "apex_hub/branding/apex-theme/templates/login.html",
        "apex_hub/branding/apex-theme/templates/page.html",
        "apex_hub/branding/apex-theme/templates/spawn.html",
    ):
        assert data in names, data
    local = {
        re.split(r"[<>=; ]", r, maxsplit=1)[0].lower()
        for r in meta.get_all("Requires-Dist")
        if re.search(r"""extra\s*==\s*["']local["']""", r)
    }
    assert {"jupyterlab", "jupyter-server", "ipykernel", "jupyter-server-terminals"} <= local, local
    assert "local" in meta.get_all("Provides-Extra")
    # the licence the metadata names travels with the wheel
    assert meta["License"] == "BSD-3-Clause" or meta.get("License-Expression") == "BSD-3-Clause", meta[
        "License"
    ]
    (licence,) = [n for n in names if ".dist-info/" in n and n.endswith("LICENSE")]
    with zipfile.ZipFile(_wheel_of(wheel_venv)) as whl:
        assert whl.read(licence).decode().startswith("BSD 3-Clause License")
    outside = wheel_venv.parent  # not the source tree: `python -c` puts the working directory first
    where = subprocess.run(
        [str(wheel_venv / "bin" / "python"), "-c", "import apex_hub; print(apex_hub.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=outside,
        env=_outside_env(),
    ).stdout.strip()
    assert Path(where).is_relative_to(wheel_venv), where  # the wheel's copy, not the source tree
    version = subprocess.run(
        [str(wheel_venv / "bin" / "apex-hub"), "--version"],
        capture_output=True,
        text=True,
        cwd=outside,
        env=_outside_env(),
    )
    assert re.fullmatch(r"apex-hub \d+\.\d+\S*", version.stdout.strip()), version.stdout + version.stderr
    helptext = subprocess.run(
        [str(wheel_venv / "bin" / "apex-hub"), "local", "--help"],
        capture_output=True,
        text=True,
        cwd=outside,
        env=_outside_env(),
    ).stdout
    assert "setup.sh" not in helptext  # a wheel user has no scripts/
    assert "--node-modules DIR" in helptext and "npm install configurable-http-proxy@5" in " ".join(
        helptext.split()
    )


def _outside_env() -> dict:
    """The suite's environment without $PYTHONPATH: a source tree put on it (a worktree's, say) would
    be imported instead of the wheel's copy."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def _bare_env() -> dict:
    """As :func:`_outside_env`, with neither the suite's node_modules/.bin on PATH nor $APEX_HUB_NODE_MODULES."""
    env = {k: v for k, v in _outside_env().items() if k != "APEX_HUB_NODE_MODULES"}
    env["PATH"] = os.pathsep.join(
        p
        for p in env.get("PATH", "").split(os.pathsep)
        if p and not os.access(os.path.join(p, "configurable-http-proxy"), os.X_OK)
    )
    # the wheel's venv borrows the suite's packages through a .pth line, which brings no console scripts:
    # the suite's bin stands in for the ones pip would have put into the venv (jupyterhub-singleuser, ...)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env["PATH"]])
    return env


def test_a_missing_npm_piece_gives_the_command_to_run(wheel_venv, tmp_path):
    result = subprocess.run(
        [str(wheel_venv / "bin" / "apex-hub"), "local", "--port", str(free_port())],
        cwd=tmp_path,
        env=_bare_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "configurable-http-proxy (JupyterHub's proxy, an npm package) not found in" in result.stderr
    assert f"{tmp_path / 'node_modules' / '.bin'}" in result.stderr
    assert "npm install configurable-http-proxy@5 oidc-provider@8.8.1" in result.stderr, result.stderr
    wrong = subprocess.run(
        [str(wheel_venv / "bin" / "apex-hub"), "local", "--node-modules", str(tmp_path / "nm")],
        cwd=tmp_path,
        env=_bare_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert wrong.returncode != 0 and f"--node-modules {tmp_path / 'nm'}: no such directory" in wrong.stderr


def test_a_missing_python_piece_gives_the_pip_command(wheel_venv, tmp_path):
    """As if the ``local`` extra were not installed: jupyterlab cannot be imported."""
    code = (
        "import sys; sys.modules['jupyterlab'] = None; from apex_hub.cli import main; "
        f"main(['local', '--port', '{free_port()}'])"
    )
    result = subprocess.run(
        [str(wheel_venv / "bin" / "python"), "-c", code],
        cwd=tmp_path,
        env=_bare_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert (
        "apex-hub local: the single-user server needs jupyterlab, not installed in this environment; "
        'run: pip install "apex-hub[local]"'
    ) in result.stderr, result.stderr


async def test_local_mode_from_the_wheel_in_a_browser(wheel_venv, tmp_path):
    """alice's whole tour, from the wheel, started in a directory with ./node_modules (as npm leaves it)."""
    async_playwright = browser_or_skip()
    shots = fresh_shots(SHOTS)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "node_modules").symlink_to(ROOT / "node_modules")
    workdir = tmp_path / "local"
    hub = LocalMode(workdir, command=[str(wheel_venv / "bin" / "apex-hub")], cwd=run_dir, env=_bare_env())
    try:
        hub.wait_for(r"Open: http://")
        site_data = next(wheel_venv.glob("lib/python*/site-packages/apex_hub/localdata/profiles.yml"))
        assert f"Profiles:   {site_data}" in hub.output()
        assert "Login: APEx OIDC authenticator" in hub.output()  # oidc-provider found in ./node_modules
        config = (workdir / "jupyterhub_config.py").read_text()
        assert repr(str(run_dir / "node_modules" / ".bin" / "configurable-http-proxy")) in config
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                await Tour(browser, hub, shots).run_all(["alice"])
            finally:
                await browser.close()
        # alice's terminal ran with the wheel venv's bin on PATH (right after her environment's)
        terminal = next((workdir / "kubesim").rglob("terminal.txt")).read_text()
        assert f"{wheel_venv}/bin/pip" in terminal.splitlines(), terminal
        stop_with_ctrl_c(hub)
    finally:
        hub.kill()

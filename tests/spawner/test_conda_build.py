"""The Conda init step, run for real as a process (venv builder: no Conda channel is reachable here)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from apex_hub.spawner import conda_build

SCRIPT = Path(conda_build.__file__)


def run(specs: Path, root: Path, builder="venv", titles=None, python=sys.executable, path="/usr/bin:/bin"):
    env = {
        "APEX_CONDA_ENVS": str(root / "envs"),
        "APEX_KERNELS_DIR": str(root / "kernels"),
        "APEX_CONDA_BUILDER": builder,
        "APEX_CONDA_TITLES": json.dumps(titles or {}),
        "PATH": path,
    }
    return subprocess.run(
        [python, str(specs / "build.py")], env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def specs(tmp_path):
    d = tmp_path / "specs"
    d.mkdir()
    shutil.copy(SCRIPT, d / "build.py")
    (d / "eo.yml").write_text("name: eo\ndependencies:\n  - python=3.11\n")
    return d


def test_built_once_reused_then_rebuilt_when_the_file_changes(specs, tmp_path):
    root = tmp_path / "ws"
    first = run(specs, root, titles={"eo": "Python (EO)"})
    assert first.returncode == 0, first.stdout + first.stderr
    assert "environment eo: building with venv" in first.stdout
    python = root / "envs" / "eo" / "bin" / "python"
    assert python.exists()
    kernel = json.loads((root / "kernels" / "conda-eo" / "kernel.json").read_text())
    assert kernel["argv"][0] == str(python) and kernel["display_name"] == "Python (EO)"
    (root / "envs" / "eo" / "user-file").write_text("kept?")

    second = run(specs, root)
    assert second.returncode == 0 and "unchanged" in second.stdout and "building" not in second.stdout
    assert (root / "envs" / "eo" / "user-file").exists()  # nothing rebuilt

    (specs / "eo.yml").write_text("name: eo\ndependencies:\n  - python=3.11\n  - numpy\n")
    third = run(specs, root)
    assert "environment eo: building" in third.stdout
    assert not (root / "envs" / "eo" / "user-file").exists()
    marker = (root / "envs" / "eo" / ".apex-hash").read_text().strip()
    import hashlib

    assert marker == hashlib.sha256((specs / "eo.yml").read_bytes()).hexdigest()
    # the rebuilt interpreter really runs (a venv whose scripts name the final prefix)
    out = subprocess.run([str(python), "-c", "import sys; print(sys.prefix)"], capture_output=True, text=True)
    assert out.stdout.strip() == str(root / "envs" / "eo")


def test_a_failed_rebuild_keeps_the_working_environment(specs, tmp_path):
    root = tmp_path / "ws"
    assert run(specs, root).returncode == 0
    (specs / "eo.yml").write_text("name: eo\ndependencies:\n  - pip:\n    - ./no-such-package-dir\n")
    failed = run(specs, root)
    assert failed.returncode == 1 and "build FAILED" in failed.stdout
    assert (root / "envs" / "eo" / "bin" / "python").exists()
    assert not list((root / "envs").glob(".eo.*"))  # nothing half-built or set aside is left


#: a stand-in for micromamba: ``create --yes --prefix P --file F`` makes a prefix that, like a real
#: Conda prefix, records the path it was built at (``conda-meta/prefix``, as scripts' ``#!`` lines do);
#: a file that names "broken-package" fails half-way, after writing into the prefix
FAKE_MICROMAMBA = f"""#!/bin/sh
while [ $# -gt 0 ]; do case "$1" in --prefix) prefix=$2; shift;; --file) file=$2; shift;; esac; shift; done
mkdir -p "$prefix/bin" "$prefix/conda-meta"
ln -s {sys.executable} "$prefix/bin/python"
echo "$prefix" > "$prefix/conda-meta/prefix"
grep -q broken-package "$file" && exit 1
cp "$file" "$prefix/conda-meta/spec.yml"
"""


@pytest.fixture
def micromamba(tmp_path):
    bindir = tmp_path / "fake-bin"
    bindir.mkdir()
    tool = bindir / "micromamba"
    tool.write_text(FAKE_MICROMAMBA)
    tool.chmod(0o755)
    return f"{bindir}:/usr/bin:/bin"


def test_a_conda_prefix_is_built_where_it_is_used_and_a_failed_rebuild_puts_the_old_one_back(
    specs, tmp_path, micromamba
):
    root = tmp_path / "ws"
    prefix = root / "envs" / "eo"
    first = run(specs, root, builder="micromamba", path=micromamba)
    assert first.returncode == 0, first.stdout + first.stderr
    # built at its final path: a Conda prefix names it (scripts, conda-meta) and breaks when renamed
    assert (prefix / "conda-meta" / "prefix").read_text().strip() == str(prefix)

    (specs / "eo.yml").write_text("name: eo\ndependencies:\n  - python=3.11\n  - xarray\n")
    second = run(specs, root, builder="micromamba", path=micromamba)
    assert second.returncode == 0 and "building with micromamba" in second.stdout
    assert (prefix / "conda-meta" / "prefix").read_text().strip() == str(prefix)
    assert "xarray" in (prefix / "conda-meta" / "spec.yml").read_text()

    # a rebuild that fails half-way: the working version is back, at the path it was built at
    (specs / "eo.yml").write_text("name: eo\ndependencies:\n  - broken-package\n")
    failed = run(specs, root, builder="micromamba", path=micromamba)
    assert failed.returncode == 1 and "build FAILED" in failed.stdout
    assert "xarray" in (prefix / "conda-meta" / "spec.yml").read_text()
    assert (prefix / "conda-meta" / "prefix").read_text().strip() == str(prefix)
    assert not list((root / "envs").glob(".eo.*"))


def test_an_interrupted_rebuild_is_undone_at_the_next_start(specs, tmp_path, micromamba):
    root = tmp_path / "ws"
    prefix = root / "envs" / "eo"
    assert run(specs, root, builder="micromamba", path=micromamba).returncode == 0
    working = (prefix / ".apex-hash").read_text()
    # the pod was killed in the middle of a rebuild: the working version set aside, a partial prefix
    prefix.rename(root / "envs" / ".eo.previous")
    (prefix / "bin").mkdir(parents=True)
    (prefix / "bin" / "half-written").write_text("")
    again = run(specs, root, builder="micromamba", path=micromamba)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "an interrupted rebuild was undone" in again.stdout and "unchanged" in again.stdout
    assert (prefix / ".apex-hash").read_text() == working and not (prefix / "bin" / "half-written").exists()
    assert (prefix / "conda-meta" / "prefix").read_text().strip() == str(prefix)
    assert not list((root / "envs").glob(".eo.*"))


def test_no_conda_tool_is_a_clear_error(specs, tmp_path):
    result = run(specs, tmp_path / "ws", builder="auto")
    assert result.returncode != 0 and "no Conda tool (micromamba, mamba, conda)" in result.stderr


def test_a_kernel_of_an_environment_dropped_from_the_profile_is_removed(specs, tmp_path):
    root = tmp_path / "ws"
    assert run(specs, root).returncode == 0
    (root / "kernels" / "python3-user").mkdir(parents=True)  # not ours: untouched
    (specs / "eo.yml").unlink()
    result = run(specs, root)
    assert "kernel conda-eo: its environment is no longer in the profile, removed" in result.stdout
    assert not (root / "kernels" / "conda-eo").exists()
    assert (root / "kernels" / "python3-user").exists() and (root / "envs" / "eo").exists()


def test_pip_requirements_are_read_from_the_file():
    text = "dependencies:\n  - python\n  - pip:\n      - requests==2.*  # http\n      - 'xarray'\n  - numpy\n"
    assert conda_build.pip_requirements(text) == ["requests==2.*", "xarray"]


def _run_in_kernel(kernels: Path, name: str, code: str) -> str:
    """Start the kernel from its spec, as JupyterLab does, execute ``code``, return its stdout."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    km = KernelManager(kernel_name=name, kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernels)]))
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    out: list[str] = []
    try:
        kc.wait_for_ready(timeout=120)

        def collect(msg):
            if msg["msg_type"] == "stream":
                out.append(msg["content"]["text"])
            elif msg["msg_type"] == "error":
                out.append("ERROR " + msg["content"]["ename"])

        reply = kc.execute_interactive(code, output_hook=collect, timeout=120)
        assert reply["content"]["status"] == "ok", (reply["content"], out)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    return "".join(out)


def test_the_kernel_of_a_venv_environment_runs_code(specs, tmp_path):
    """Built from inside a venv (as local mode's pods are), the env still reaches ipykernel."""
    root = tmp_path / "ws"
    (specs / "eo.yml").write_text("name: eo\ndependencies:\n  - python\n")
    result = run(specs, root)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "NO KERNEL" not in result.stdout
    output = _run_in_kernel(root / "kernels", "conda-eo", "import sys; print(sys.prefix, 6 * 7)")
    assert output.strip() == f"{root / 'envs' / 'eo'} 42"


def test_an_environment_without_ipykernel_gets_no_kernel_and_a_clear_log(specs, tmp_path):
    base = Path(sys.base_prefix) / "bin" / "python3"
    if subprocess.run([str(base), "-c", "import ipykernel"], capture_output=True).returncode == 0:
        pytest.skip(f"{base} has ipykernel: no environment without it to build here")
    root = tmp_path / "ws"
    (root / "kernels" / "conda-eo").mkdir(parents=True)  # a stale spec from an earlier build goes too
    result = run(specs, root, python=str(base))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "environment eo: NO KERNEL: its Python cannot import ipykernel" in result.stdout
    assert "add ipykernel to the environment's dependencies" in result.stdout
    assert (root / "envs" / "eo" / "bin" / "python").exists()
    assert not (root / "kernels" / "conda-eo").exists()

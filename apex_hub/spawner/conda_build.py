#!/usr/bin/env python3
"""Build the Conda environments of an APEx workspace, once, and register them as kernels.

Runs as the ``conda-environments`` init container of a user's pod (standard library
only, so any image with Python runs it). Its ``environment.yml`` files are mounted
next to it from a ConfigMap. For each ``<name>.yml``:

* the environment lives in ``$APEX_CONDA_ENVS/<name>`` on the workspace volume, with
  the SHA-256 of the file it was built from in ``.apex-hash``;
* unchanged hash: reused as is (no solver runs); changed or missing: built in place
  (prefixes are not relocatable) with the working version set aside, and put back
  when the build fails, so a failed rebuild never destroys a working environment;
* a Jupyter kernel spec ``conda-<name>`` is written under ``$APEX_KERNELS_DIR``
  (on the server's ``JUPYTER_PATH``).

``APEX_CONDA_BUILDER``: ``auto`` (first of micromamba, mamba, conda on PATH), one of
those names, or ``venv`` (images without Conda: a Python venv that sees the image's
packages, plus the file's ``pip:`` list; Conda packages are not installed). When the
image's Python is itself a venv, the new venv also sees that venv's packages: ``venv
--system-site-packages`` alone exposes only the base interpreter's, which usually lacks
ipykernel, and the kernel would die at start.

A kernel spec is only written for an environment that can import ipykernel: a spec whose
kernel cannot start is worse than none (the cell stays ``[*]``); the log says what to add.
Kernel specs of environments no longer listed are removed; their prefixes stay
(the user's data is never deleted here).

The shared cache (``APExSpawner.conda_cache_volume``, see ``conda_cache.py``): with
``APEX_CONDA_CACHE`` (the cache's mount path, read-only here) and ``APEX_CONDA_CACHE_KEYS``
(environment name -> cache key), an environment the user has no current build of in the claim
(their own build wins: they may have changed it; an empty file ``<name>.private`` next to it
asks for one) and whose shared build is complete (``<cache>/<key>/.apex-ready``) is used from
there: its kernel spec points at the shared prefix (read-only), nothing is built. A shared
build still in progress is waited for (at most ``APEX_CONDA_CACHE_WAIT`` seconds, and only
while its heartbeat moves, see ``APEX_CONDA_CACHE_STALL``); a failed, stalled or absent one
falls back to the per-user build above. The same script is the cache's build Job
(``APEX_CONDA_CACHE_BUILD``, ``shared_build``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

KERNEL_PREFIX = "conda-"
MARKER = ".apex-hash"
OWNED = ".apex-kernel"
READY = ".apex-ready"  # written last into a shared prefix: the build is complete
KERNEL_CHECK = ".apex-kernel-check"  # in a shared prefix: kernel_problem's answer ("" = fine)
PRIVATE = "private"  # $APEX_CONDA_ENVS/<name>.private: this user builds <name> in their claim
HEARTBEAT_EVERY = 5.0


def log(message: str) -> None:
    print(f"[apex-conda {time.strftime('%H:%M:%S')}] {message}", flush=True)


def pip_requirements(spec_text: str) -> list[str]:
    """The ``pip:`` list of an environment.yml, read without a YAML library."""
    deps, in_pip, pip_indent = [], False, None
    for raw in spec_text.splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        item = line.strip()
        if item.startswith("- pip:") or item == "- pip:":
            in_pip, pip_indent = True, indent
            continue
        if in_pip:
            if indent > pip_indent and item.startswith("- "):
                deps.append(item[2:].strip().strip("'\""))
                continue
            in_pip = False
    return deps


def choose_builder(requested: str) -> str:
    if requested != "auto":
        return requested
    for tool in ("micromamba", "mamba", "conda"):
        if shutil.which(tool):
            return tool
    raise SystemExit(
        "no Conda tool (micromamba, mamba, conda) in this image; set the"
        " profile's builder to 'venv' or use an image with Conda"
    )


PARENT_PTH = "_apex_parent_venv.pth"


def parent_venv_site_packages() -> list[str]:
    """This interpreter's own venv site-packages, if it runs in a venv (else nothing)."""
    if sys.prefix == sys.base_prefix:
        return []
    import site

    return [p for p in site.getsitepackages() if Path(p).is_relative_to(sys.prefix)]


def site_packages(prefix: Path) -> Path:
    out = subprocess.run(
        [str(prefix / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True,
        capture_output=True,
        text=True,
    )
    return Path(out.stdout.strip())


def link_parent_venv(prefix: Path) -> None:
    """Let a venv built from inside a venv see that venv's packages too (after its own).

    ``site.addsitedir`` rather than a plain path line: the parent's own ``.pth`` files (editable
    installs, further site directories) then apply as they do in the parent."""
    parents = parent_venv_site_packages()
    if parents:
        lines = "".join(f"import site; site.addsitedir({p!r})\n" for p in parents)
        (site_packages(prefix) / PARENT_PTH).write_text(lines)


def kernel_problem(prefix: Path) -> str | None:
    """Why the environment's Python cannot run a Jupyter kernel, or None when it can."""
    try:
        done = subprocess.run(
            [str(prefix / "bin" / "python"), "-c", "import ipykernel"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if done.returncode != 0:
        return (done.stderr.strip().splitlines() or ["import ipykernel failed"])[-1]
    return None


def build(builder: str, spec: Path, prefix: Path) -> None:
    if builder == "venv":
        reqs = pip_requirements(spec.read_text())
        pip = [] if reqs else ["--without-pip"]
        subprocess.run(
            [sys.executable, "-m", "venv", "--system-site-packages", *pip, str(prefix)], check=True
        )
        link_parent_venv(prefix)
        if reqs:
            subprocess.run(
                [str(prefix / "bin" / "python"), "-m", "pip", "install", "--no-input", *reqs], check=True
            )
    elif builder == "conda":
        subprocess.run(["conda", "env", "create", "--prefix", str(prefix), "--file", str(spec)], check=True)
    else:
        subprocess.run([builder, "create", "--yes", "--prefix", str(prefix), "--file", str(spec)], check=True)


def write_kernel(
    kernels: Path, name: str, title: str, prefix: Path, digest: str, shared: str | None = None
) -> None:
    kdir = kernels / f"{KERNEL_PREFIX}{name}"
    kdir.mkdir(parents=True, exist_ok=True)
    apex = {"environment": name, "sha256": digest}
    if shared:
        apex["shared"] = shared  # the cache key: the prefix is the cluster's shared build
    spec = {
        "argv": [str(prefix / "bin" / "python"), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": title,
        "language": "python",
        "metadata": {"apex": apex},
    }
    (kdir / "kernel.json").write_text(json.dumps(spec, indent=1))
    (kdir / OWNED).write_text(name)


# -- the shared cache ---------------------------------------------------------------------


def shared_ready(cache: Path, key: str) -> Path | None:
    """The shared prefix of ``key`` when its build is complete."""
    prefix = cache / key
    return prefix if (prefix / READY).is_file() and (prefix / "bin" / "python").exists() else None


def wait_for_shared(cache: Path, key: str, name: str, wait: float, stall: float) -> Path | None:
    """Wait for a shared build in progress: at most ``wait`` s, and only while its heartbeat moves.

    The heartbeat's content (a counter), not its time stamp, tells progress: the cache may be
    served by another machine whose clock differs. No heartbeat at all (the build Job's pod not
    started yet) counts as no progress, so a Job that cannot start costs ``stall`` s at most.
    """
    if wait <= 0:
        return None
    beat_file, failed = cache / f".{key}.heartbeat", cache / f".{key}.failed"
    log(f"environment {name}: waiting for the shared build (cache key {key[:12]}, at most {wait:g} s)")
    started = last_change = time.monotonic()
    last = None
    while True:
        ready = shared_ready(cache, key)
        if ready:
            log(f"environment {name}: shared build ready after {time.monotonic() - started:.1f} s")
            return ready
        if failed.is_file():
            log(f"environment {name}: the shared build failed ({failed.read_text().strip()[:200]})")
            return None
        now = time.monotonic()
        try:
            beat = beat_file.read_text()
        except OSError:
            beat = None
        if beat != last:
            last, last_change = beat, now
        if now - last_change > stall:
            log(f"environment {name}: the shared build made no progress for {stall:g} s")
            return None
        if now - started > wait:
            log(f"environment {name}: the shared build is not ready after {wait:g} s")
            return None
        time.sleep(min(1.0, max(0.05, stall / 10)))


def use_shared(cache: Path | None, key: str | None, name: str, wait: float, stall: float) -> Path | None:
    """The complete shared prefix for ``key`` (waited for when ``wait``), or None."""
    if cache is None or not key:
        return None
    ready = shared_ready(cache, key) or wait_for_shared(cache, key, name, wait, stall)
    if ready:
        log(f"environment {name}: using the shared build (cache key {key[:12]}) at {ready}, nothing built")
    return ready


def shared_build() -> int:
    """The cache's build Job: build ``APEX_CONDA_SPEC`` once into ``<cache>/<key>``.

    Built in place (a Conda prefix is not relocatable, so no rename), with the completion
    marker written last; a heartbeat counter moves while it builds, so that waiting
    workspaces can tell progress; a failure leaves ``.<key>.failed`` (they stop waiting) and
    removes the partial prefix. A complete build is left alone (a second Job is a no-op).
    """
    import tempfile
    import threading

    os.umask(0o022)  # every workspace's user reads it
    cache, key = Path(os.environ["APEX_CONDA_CACHE"]), os.environ["APEX_CONDA_CACHE_BUILD"]
    name = os.environ.get("APEX_CONDA_NAME", key[:12])
    prefix, failed, beat_file = cache / key, cache / f".{key}.failed", cache / f".{key}.heartbeat"
    if shared_ready(cache, key):
        log(f"environment {name}: shared build {key[:12]} is complete already")
        return 0
    cache.mkdir(parents=True, exist_ok=True)
    failed.unlink(missing_ok=True)
    shutil.rmtree(prefix, ignore_errors=True)  # an earlier attempt's partial prefix
    stop = threading.Event()

    def heartbeat() -> None:
        count = 0
        while True:
            count += 1
            beat_file.write_text(f"{count}\n")
            if stop.wait(HEARTBEAT_EVERY):
                return

    beating = threading.Thread(target=heartbeat, daemon=True)
    beating.start()
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / f"{name}.yml"
        spec.write_text(os.environ["APEX_CONDA_SPEC"])
        if os.environ.get("APEX_CONDARC_TEXT"):
            (Path(tmp) / "condarc").write_text(os.environ["APEX_CONDARC_TEXT"])
            os.environ["CONDARC"] = str(Path(tmp) / "condarc")
        builder = choose_builder(os.environ.get("APEX_CONDA_BUILDER", "auto"))
        log(f"environment {name}: shared build with {builder} into {prefix}")
        started = time.monotonic()
        try:
            build(builder, spec, prefix)
            (prefix / MARKER).write_text(hashlib.sha256(spec.read_bytes()).hexdigest() + "\n")
        except (subprocess.CalledProcessError, OSError) as exc:
            shutil.rmtree(prefix, ignore_errors=True)
            failed.write_text(f"{exc}\n")
            log(f"environment {name}: shared build FAILED ({exc})")
            return 1
        finally:
            stop.set()
            beating.join()
    problem = kernel_problem(prefix)  # once here, not in every workspace (same image: in the key)
    (prefix / KERNEL_CHECK).write_text(problem or "")
    (prefix / READY).write_text(key + "\n")
    log(f"environment {name}: shared build done in {time.monotonic() - started:.1f} s")
    return 0


def set_aside(prefix: Path) -> Path:
    """Where the working version of ``prefix`` waits while it is rebuilt."""
    return prefix.with_name(f".{prefix.name}.previous")


def recover(prefix: Path) -> None:
    """Finish what an interrupted rebuild left (the pod was killed in the middle of one).

    A complete new build (its hash marker is written last) wins and the set-aside version goes;
    otherwise the partial build goes and the set-aside version comes back to its own path, where
    it works again. Staging directories of earlier versions of this script are removed.
    """
    previous = set_aside(prefix)
    if previous.exists():
        if (prefix / MARKER).is_file():
            shutil.rmtree(previous)
        else:
            shutil.rmtree(prefix, ignore_errors=True)
            previous.rename(prefix)
            log(f"environment {prefix.name}: an interrupted rebuild was undone; the previous version is back")
    shutil.rmtree(prefix.with_name(f".{prefix.name}.building"), ignore_errors=True)


def build_in_place(builder: str, spec: Path, prefix: Path, digest: str) -> bool:
    """Build at ``prefix`` itself, the working version set aside meanwhile; False when it failed.

    Conda prefixes and venvs are not relocatable (scripts' ``#!`` lines, ``conda-meta``, activation
    scripts and some binaries name the path they were built at), so an environment is built where it
    is used, never built elsewhere and renamed. A working version is renamed out of the way first
    and renamed back, to the path it was built at, when the build fails: a failed rebuild never
    destroys a working environment.
    """
    previous = set_aside(prefix)
    if prefix.exists():
        prefix.rename(previous)
    try:
        build(builder, spec, prefix)
    except (subprocess.CalledProcessError, OSError) as exc:
        shutil.rmtree(prefix, ignore_errors=True)
        if previous.exists():
            previous.rename(prefix)
        log(f"environment {prefix.name}: build FAILED ({exc}); the previous version, if any, is kept")
        return False
    (prefix / MARKER).write_text(digest + "\n")  # last: the build is complete
    shutil.rmtree(previous, ignore_errors=True)
    return True


def main() -> int:
    specs = Path(__file__).resolve().parent
    envs = Path(os.environ["APEX_CONDA_ENVS"])
    kernels = Path(os.environ["APEX_KERNELS_DIR"])
    titles = json.loads(os.environ.get("APEX_CONDA_TITLES", "{}"))
    requested = os.environ.get("APEX_CONDA_BUILDER", "auto")
    cache = Path(os.environ["APEX_CONDA_CACHE"]) if os.environ.get("APEX_CONDA_CACHE") else None
    keys = json.loads(os.environ.get("APEX_CONDA_CACHE_KEYS", "{}"))
    wait = float(os.environ.get("APEX_CONDA_CACHE_WAIT", "0"))
    stall = float(os.environ.get("APEX_CONDA_CACHE_STALL", "60"))
    envs.mkdir(parents=True, exist_ok=True)
    kernels.mkdir(parents=True, exist_ok=True)
    wanted = set()
    for spec in sorted(specs.glob("*.yml")):
        name = spec.stem
        wanted.add(name)
        digest = hashlib.sha256(spec.read_bytes()).hexdigest()
        prefix = envs / name
        recover(prefix)
        marker = prefix / MARKER
        current = (
            marker.is_file() and marker.read_text().strip() == digest and (prefix / "bin" / "python").exists()
        )
        # the user's own current build first (theirs: they may have changed it), then the
        # shared one (waited for), then a build of their own; <name>.private: never shared
        private = (envs / f"{name}.{PRIVATE}").exists()
        shared = None if current or private else use_shared(cache, keys.get(name), name, wait, stall)
        if shared is not None:
            prefix = shared
        elif current:
            log(f"environment {name}: unchanged (sha256 {digest[:12]}), reusing {prefix}")
        else:
            if cache is not None:
                why = f"{name}.{PRIVATE} asks for your own" if private else "no shared build to use"
                log(f"environment {name}: {why}; building in your workspace")
            builder = choose_builder(requested)
            log(f"environment {name}: building with {builder} (sha256 {digest[:12]})")
            started = time.monotonic()
            if not build_in_place(builder, spec, prefix, digest):
                return 1
            log(f"environment {name}: built in {time.monotonic() - started:.1f} s")
        checked = prefix / KERNEL_CHECK if shared is not None else None
        problem = checked.read_text().strip() if checked and checked.is_file() else kernel_problem(prefix)
        if problem:
            shutil.rmtree(kernels / f"{KERNEL_PREFIX}{name}", ignore_errors=True)
            log(
                f"environment {name}: NO KERNEL: its Python cannot import ipykernel ({problem}); add"
                f" ipykernel to the environment's dependencies"
            )
            continue
        write_kernel(
            kernels, name, titles.get(name, name), prefix, digest, keys.get(name) if shared else None
        )
    for kdir in kernels.glob(f"{KERNEL_PREFIX}*"):
        owned = kdir / OWNED
        if owned.is_file() and owned.read_text() not in wanted:
            shutil.rmtree(kdir)
            log(f"kernel {kdir.name}: its environment is no longer in the profile, removed")
    return 0


if __name__ == "__main__":
    sys.exit(shared_build() if os.environ.get("APEX_CONDA_CACHE_BUILD") else main())

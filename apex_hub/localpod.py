"""The single-user server of a local-mode pod: a workspace's shell and PATH, then ``jupyterhub-singleuser``.

kubesim runs each pod as a local process with the host's PATH, and JupyterLab's terminal would be a
login ``sh`` whose ``/etc/profile`` resets PATH again: ``jupyter`` not found, ``pip install`` into the
system Python. In a real image the Conda environment and the image's venv come first. This wrapper
(the pod's command in local mode: ``python -m apex_hub.localpod [server args]``) restores that:

* PATH: the ``bin`` of every environment the workspace's Conda kernels run in (their kernel specs on
  ``JUPYTER_PATH``), then this venv's ``bin``, then the rest;
* SHELL: bash (else sh), started as an interactive non-login shell, so PATH survives;
* ``JUPYTER_CONFIG_PATH``: local mode's JupyterLab page config (no news prompt);

and then runs this venv's ``jupyterhub-singleuser`` in the same process (one interpreter start, not two;
a ``jupyterhub-singleuser`` found elsewhere on PATH is another Python's, and is exec'd).

It also keeps ``jsonschema`` from importing ``rfc3987-syntax``, its checker for the ``iri`` formats,
which builds some 35 Earley parsers at import time: about a second of every server start on a laptop,
for formats no Jupyter schema uses (upstream: python-jsonschema/jsonschema#1428,
jupyter-server/jupyter_server#1559). ``APEX_LOCAL_FAST_START=0`` in the environment of ``apex-hub
local`` turns both off (``jupyterhub-singleuser`` is then exec'd as a program of its own, as before):
the baseline of ``benchmarks/local_startup.py``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path

LAB_CONFIG = Path(__file__).resolve().parent / "localdata" / "jupyter-config"
FAST_START_ENV = "APEX_LOCAL_FAST_START"
#: jsonschema's optional ``iri`` format checker, a second of import time (see the module's docstring)
SLOW_IMPORT = "rfc3987_syntax"


def environment_bins(jupyter_path: str) -> list[str]:
    """``bin`` directories of the Conda kernels' environments (``conda-*`` specs), in path order."""
    bins: list[str] = []
    for entry in filter(None, jupyter_path.split(os.pathsep)):
        for spec in sorted(Path(entry, "kernels").glob("conda-*/kernel.json")):
            try:
                python = Path(json.loads(spec.read_text())["argv"][0])
            except (OSError, ValueError, KeyError, IndexError):
                continue
            if python.parent.is_dir() and str(python.parent) not in bins:
                bins.append(str(python.parent))
    return bins


def workspace_path(environ: dict) -> str:
    """PATH: the environments' bins, this venv's bin, then what was there (no duplicates)."""
    first = environment_bins(environ.get("JUPYTER_PATH", "")) + [str(Path(sys.executable).parent)]
    rest = environ.get("PATH", os.defpath).split(os.pathsep)
    seen: set[str] = set()
    return os.pathsep.join(p for p in first + rest if p and not (p in seen or seen.add(p)))


def main(argv: list[str]) -> None:
    env = dict(os.environ)
    env["PATH"] = workspace_path(env)
    shell = shutil.which("bash", path=env["PATH"]) or shutil.which("sh", path=env["PATH"]) or "/bin/sh"
    env["SHELL"] = shell
    env["JUPYTER_CONFIG_PATH"] = os.pathsep.join(
        filter(None, [str(LAB_CONFIG), env.get("JUPYTER_CONFIG_PATH")])
    )
    server = shutil.which("jupyterhub-singleuser", path=str(Path(sys.executable).parent)) or shutil.which(
        "jupyterhub-singleuser", path=env["PATH"]
    )
    if server is None or importlib.util.find_spec("jupyter_server") is None:
        sys.exit('apex_hub.localpod: jupyterhub-singleuser not found: pip install "apex-hub[local]"')
    # a shell_command of our own: JupyterLab then starts it as given, not as a login shell
    args = [*argv, f"--ServerApp.terminado_settings=shell_command={shell}"]
    # in this process only when the server is this interpreter's (its venv's bin): one found elsewhere on
    # PATH belongs to another Python, whose prefix holds its Jupyter config (the server extensions)
    if env.get(FAST_START_ENV, "1") == "0" or Path(server).parent != Path(sys.executable).parent:
        os.execve(server, [server, *args], env)
    os.environ.clear()
    os.environ.update(env)
    sys.modules.setdefault(SLOW_IMPORT, None)  # an import of it raises ImportError: jsonschema goes without
    sys.argv = [server, *args]
    from jupyterhub.singleuser import main as singleuser

    sys.exit(singleuser())


if __name__ == "__main__":
    main(sys.argv[1:])

"""Local mode end to end, in a real browser: ``apex-hub local`` + headless Debian chromium.

Starts ``apex-hub local`` as a subprocess (kubesim in process mode, a real JupyterHub and
configurable-http-proxy, APExSpawner, real ``jupyterhub-singleuser`` servers), then drives
chromium through Playwright: log in through the APEx OIDC authenticator at the local OpenID
provider, the group-gated spawn form, the progress page, JupyterLab
with the Conda kernel and the ConfigMap file, Stop My Server, log out (at the provider too). Finally Ctrl-C (SIGINT) must
stop everything within 20 s, leaving no process behind.

Needs /usr/bin/chromium (Debian package ``chromium``; ``.ci/run`` installs it) and the
``playwright`` Python package — never ``playwright install``: the system browser is used.
Screenshots of every step go to ``test-artifacts/local-mode/``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.helpers.hub import free_port

pytestmark = pytest.mark.process

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "test-artifacts" / "local-mode"
APEX_HUB = Path(sys.executable).parent / "apex-hub"
KERNEL = "Python (demo, APEx)"
WAIT = 120_000  # ms: a spawn builds a venv
# a GET from the page, as JupyterLab makes it: the server wants the _xsrf cookie echoed in a header
FETCH_JSON = """async (url) => {
    const xsrf = (document.cookie.match(/(?:^|;\\s*)_xsrf=([^;]*)/) || [])[1] || '';
    const r = await fetch(url, {headers: {'X-XSRFToken': decodeURIComponent(xsrf)}});
    return {status: r.status, body: await r.json()};
}"""


class LocalMode:
    """``apex-hub local`` as a subprocess; its output is collected line by line."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.port = free_port()
        self.lines: list[str] = []
        command = [str(APEX_HUB), "local", "--port", str(self.port), "--workdir", str(workdir)]
        self.proc = subprocess.Popen(command, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, start_new_session=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 90) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if m := re.search(pattern, line):
                    return m
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"no {pattern!r} in the output of apex-hub local:\n{self.output()}\n"
                             f"hub log:\n{self.hub_log()[-4000:]}")

    def hub_log(self) -> str:
        path = self.workdir / "jupyterhub.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) for every live process, from /proc."""
    result = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            fields = stat[stat.rindex(")") + 2:].split()
            if fields[0] == "Z":
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, ValueError):
            continue
        result[int(entry)] = (int(fields[1]), cmdline)
    return result


def _descendants(pid: int) -> dict[int, str]:
    procs = _processes()
    found, todo = {}, [pid]
    while todo:
        parent = todo.pop()
        for child, (ppid, cmdline) in procs.items():
            if ppid == parent and child not in found:
                found[child] = cmdline
                todo.append(child)
    return found


def _mentions(pid: int, text: str) -> bool:
    """Whether ``text`` is in the process's command line, environment or working directory."""
    try:
        for name in ("cmdline", "environ"):
            with open(f"/proc/{pid}/{name}", "rb") as f:
                if text.encode() in f.read():
                    return True
        return text in os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return False


def _alive(pids) -> dict[int, str]:
    procs = _processes()
    return {pid: procs[pid][1] for pid in pids if pid in procs}


@pytest.fixture
def local_mode(tmp_path):
    workdir = tmp_path / "local"
    workdir.mkdir()
    hub = LocalMode(workdir)
    try:
        yield hub
    finally:
        hub.kill()


def test_local_mode_in_a_browser(local_mode):
    playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the test extra)")
    expect, sync_playwright = playwright.expect, playwright.sync_playwright
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    SHOTS.mkdir(parents=True, exist_ok=True)
    for old in SHOTS.glob("*.png"):
        old.unlink()
    started = time.monotonic()
    hub = local_mode
    url = hub.wait_for(r"Open: (http://127\.0\.0\.1:\d+/)").group(1)
    password = hub.wait_for(r"Demo password \(all users\): (\S+)").group(1)
    assert "LOCAL DEMO LOGIN — not for production" in hub.output()
    assert "Login: APEx OIDC authenticator → local OpenID provider http://127.0.0.1:" in hub.output()
    for user in ("alice", "bob", "carol"):
        assert re.search(rf"^\s+{user}\b", hub.output(), re.M), hub.output()
    base = url.rstrip("/")

    def shot(page, name):
        page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            def sign_in(page, user, shots=False):
                """The hub's login page → the provider's form → back at the hub."""
                page.goto(f"{base}/hub/login")
                button = page.get_by_role("button", name="Sign in with APEx local identity provider")
                expect(button).to_be_visible()
                if shots:
                    shot(page, "01-login")
                button.click()
                page.wait_for_selector("input[name=login]")
                expect(page).to_have_title("APEx local identity provider")
                page.fill("input[name=login]", user)
                page.fill("input[name=password]", password)
                if shots:
                    shot(page, "01-provider-login")
                page.click("button[type=submit]")
                page.wait_for_url(re.compile(r".*/hub/(spawn|home).*"))

            def login(user):
                context = browser.new_context(viewport={"width": 1280, "height": 800})
                page = context.new_page()
                sign_in(page, user)
                return context, page

            def offered(page):
                page.goto(f"{base}/hub/spawn")
                page.wait_for_selector("#kubespawner-profiles-list")
                return page.eval_on_selector_all("input[name=profile]", "els => els.map(e => e.value)")

            # the group gate on the form: bob (apex-large) sees all, carol (no group) the open ones
            for user, expected in (("bob", ["jupyterlab", "conda", "small", "large"]),
                                   ("carol", ["jupyterlab", "conda"])):
                context, page = login(user)
                assert offered(page) == expected, user
                shot(page, f"00-spawn-form-{user}")
                context.close()

            # alice: the login page, then her form (apex-small: no large profile)
            context = browser.new_context(viewport={"width": 1280, "height": 800})
            page = context.new_page()
            sign_in(page, "alice", shots=True)
            assert offered(page) == ["jupyterlab", "conda", "small"]
            assert page.locator("#profile-item-large").count() == 0
            expect(page.locator("#kubespawner-profiles-list")).to_contain_text("JupyterLab + Conda environment")
            expect(page.locator("#kubespawner-profiles-list")).not_to_contain_text("Large")
            page.check("#profile-item-conda")
            shot(page, "02-spawn-form-alice")

            # the progress page shows the spawner's own messages
            page.click("form button[type=submit]")
            page.wait_for_url(re.compile(r".*/hub/spawn-pending/alice.*"), timeout=WAIT)
            page.wait_for_function(
                "() => (document.querySelector('#progress-log') || {}).textContent"
                "  && document.querySelector('#progress-log').textContent.includes('Preparing your workspace')",
                timeout=WAIT)
            progress_log = page.text_content("#progress-log")
            assert "Preparing your workspace (namespace apex-alice)" in progress_log, progress_log
            if page.locator("#progress-details summary").is_visible():
                page.click("#progress-details summary")  # open the event log for the screenshot
            shot(page, "03-progress")

            # JupyterLab, served by the real single-user server
            page.wait_for_url(re.compile(r".*/user/alice/lab.*"), timeout=WAIT)
            page.wait_for_selector("#jp-main-dock-panel", timeout=WAIT)
            launcher = page.wait_for_selector(".jp-Launcher", timeout=WAIT)
            page.wait_for_selector(f".jp-Launcher >> text={KERNEL}", timeout=WAIT)
            assert KERNEL in launcher.inner_text()
            shot(page, "04-jupyterlab")

            # the Conda kernel and the ConfigMap file, through the server's API from the browser
            specs = page.evaluate(FETCH_JSON, "/user/alice/api/kernelspecs")
            assert specs["status"] == 200, specs
            kernelspecs = specs["body"]["kernelspecs"]
            assert "conda-demo" in kernelspecs, list(kernelspecs)
            assert kernelspecs["conda-demo"]["spec"]["display_name"] == KERNEL
            assert kernelspecs["conda-demo"]["spec"]["argv"][0].endswith("/.apex/conda/envs/demo/bin/python")
            welcome = page.evaluate(FETCH_JSON, "/user/alice/api/contents/apex/welcome.txt?content=1")
            assert welcome["status"] == 200, welcome
            assert welcome["body"]["content"].startswith(
                'Welcome alice! This is the APEx workspace profile "conda",'), welcome
            assert "namespace apex-alice on kubesim" in welcome["body"]["content"]
            page.goto(f"{base}/user/alice/lab/tree/apex/welcome.txt")
            page.wait_for_selector(".jp-FileEditor >> text=Welcome alice!", timeout=WAIT)
            shot(page, "05-configmap-file")

            # the processes behind it: hub, proxy and the single-user server, all ours
            children = _descendants(hub.proc.pid)
            kinds = {k for k in ("jupyterhub", "configurable-http-proxy", "jupyterhub-singleuser")
                     if any(k in cmd for cmd in children.values())}
            assert kinds == {"jupyterhub", "configurable-http-proxy", "jupyterhub-singleuser"}, children

            # Stop My Server from the hub's home page
            page.goto(f"{base}/hub/home")
            stop = page.locator("#stop")
            expect(stop).to_be_visible()
            shot(page, "06-home-running")
            stop.click()
            expect(page.locator("#start")).to_be_visible(timeout=WAIT)
            expect(stop).to_be_hidden()
            expect(page.locator("#start")).to_contain_text("Start My Server")
            shot(page, "07-home-stopped")

            # logging out ends the provider session too: the next sign-in asks for the password
            page.goto(f"{base}/hub/logout")
            page.wait_for_url(re.compile(r".*/hub/login.*"), timeout=WAIT)
            page.get_by_role("button", name="Sign in with APEx local identity provider").click()
            page.wait_for_selector("input[name=password]")
            shot(page, "08-after-logout")
            context.close()
        finally:
            browser.close()

    # the server is gone: its pod and process
    deadline = time.monotonic() + 30
    while any("jupyterhub-singleuser" in c for c in _descendants(hub.proc.pid).values()):
        assert time.monotonic() < deadline, _descendants(hub.proc.pid)
        time.sleep(0.2)

    # Ctrl-C: everything stops within 20 s, nothing is left behind
    children = _descendants(hub.proc.pid)
    hub.proc.send_signal(signal.SIGINT)
    t0 = time.monotonic()
    try:
        code = hub.proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"apex-hub local did not stop within 20 s:\n{hub.output()}") from None
    elapsed = time.monotonic() - t0
    assert code == 0, hub.output()
    assert "apex-hub local: stopped" in hub.output()
    time.sleep(0.5)
    assert not _alive(children), f"left behind after {elapsed:.1f}s: {_alive(children)}"
    leftovers = {pid: cmd for pid, (_, cmd) in _processes().items()
                 if pid != os.getpid() and _mentions(pid, str(hub.workdir))}
    assert not leftovers, leftovers
    print(f"local mode: whole test {time.monotonic() - started:.1f}s, Ctrl-C to exit {elapsed:.1f}s")
    (SHOTS / "run.json").write_text(json.dumps({"stop_seconds": round(elapsed, 2),
                                                "test_seconds": round(time.monotonic() - started, 1)}))

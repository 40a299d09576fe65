"""Local mode end to end, in a real browser: ``apex-hub local`` + headless Debian chromium.

Starts ``apex-hub local`` as a subprocess (kubesim in process mode, a real JupyterHub and
configurable-http-proxy, APExSpawner, the culler, accounting and monitoring services, real
``jupyterhub-singleuser`` servers), then drives chromium through Playwright (its async API), for
the three demo users at once, each in a browser context of their own:
sign in through the APEx OIDC authenticator at the local OpenID provider (the APEx login page with
the demo-user hint) → the group-gated spawn form → the progress page → JupyterLab → a cell run in
the Conda kernel, its output read back → a terminal running ``jupyter --version`` → the usage page
→ the status page → Stop My Server → log out (at the provider too). Finally Ctrl-C (SIGINT) must
stop everything within 20 s, leaving no process behind. ``tests/test_wheel_local.py`` runs the same
tour from an installed wheel.

Needs /usr/bin/chromium (Debian package ``chromium``; ``.ci/run`` installs it) and the
``playwright`` Python package — never ``playwright install``: the system browser is used.
Screenshots of every step go to ``test-artifacts/local-mode/``.
"""

from __future__ import annotations

import asyncio
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
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "test-artifacts" / "local-mode"
APEX_HUB = Path(sys.executable).parent / "apex-hub"
KERNEL = "Python (demo, APEx)"
WAIT = 120_000  # ms: a spawn builds a venv
USERS = {
    "alice": ["jupyterlab", "conda", "small"],
    "bob": ["jupyterlab", "conda", "small", "large"],
    "carol": ["jupyterlab", "conda"],
}
# a GET from the page, as JupyterLab makes it: the server wants the _xsrf cookie echoed in a header
FETCH_JSON = """async (url) => {
    const xsrf = (document.cookie.match(/(?:^|;\\s*)_xsrf=([^;]*)/) || [])[1] || '';
    const r = await fetch(url, {headers: {'X-XSRFToken': decodeURIComponent(xsrf)}});
    return {status: r.status, body: r.status === 200 ? await r.json() : await r.text()};
}"""


class LocalMode:
    """``apex-hub local`` as a subprocess; its output is collected line by line."""

    def __init__(
        self,
        workdir: Path,
        command: list[str] | None = None,
        cwd: Path | None = None,
        env: dict | None = None,
    ):
        self.workdir = workdir
        self.port = free_port()
        self.lines: list[str] = []
        command = (command or [str(APEX_HUB)]) + [
            "local",
            "--port",
            str(self.port),
            "--workdir",
            str(workdir),
        ]
        self.proc = subprocess.Popen(
            command,
            cwd=cwd or workdir,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            env=env,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 180) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if m := re.search(pattern, line):
                    return m
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(
            f"no {pattern!r} in the output of apex-hub local:\n{self.output()}\n"
            f"hub log:\n{self.hub_log()[-4000:]}"
        )

    def hub_log(self) -> str:
        path = self.workdir / "jupyterhub.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def pod_logs(self, user: str, chars: int = 3000) -> str:
        """The tail of every container log of the user's pods (kubesim keeps them in its workdir)."""
        logs = sorted((self.workdir / "kubesim").rglob(f"*{user}*/*.log"))
        return "\n".join(f"--- {log}:\n{log.read_text(errors='replace')[-chars:]}" for log in logs)

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
            fields = stat[stat.rindex(")") + 2 :].split()
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


class Tour:
    """The browser tour of one running ``apex-hub local`` (Playwright's async API, system chromium).

    One tour per user; the users' tours run side by side (``run_all``), each in a browser context of
    its own, as three people would use the hub: most of a tour is waiting on the servers (a spawn, a
    kernel, a command in the terminal, the services' rounds), which then overlaps.
    """

    def __init__(self, browser, hub: LocalMode, shots: Path):
        from playwright.async_api import expect

        self.browser, self.hub, self.shots, self.expect = browser, hub, shots, expect
        self.base = hub.wait_for(r"Open: (http://127\.0\.0\.1:\d+/)").group(1).rstrip("/")
        self.password = hub.wait_for(r"Demo password \(all users\): (\S+)").group(1)

    async def run_all(self, users) -> None:
        """Every user's tour at once; all of them finish (each has its screenshots), the first failure is raised."""
        self.expect.set_options(timeout=WAIT)  # not 5 s: the tours share two cores with the hub and servers
        try:
            results = await asyncio.gather(
                *(self.run(user, n) for n, user in enumerate(users, 1)), return_exceptions=True
            )
        finally:
            self.expect.set_options(timeout=None)  # Playwright's default again, for any other test
        failures = [(user, r) for user, r in zip(users, results) if isinstance(r, BaseException)]
        if failures:
            user, first = failures[0]
            others = "; ".join(f"{u}: {type(r).__name__}" for u, r in failures[1:])
            raise AssertionError(
                f"{user}'s tour failed{' (also ' + others + ')' if others else ''}"
            ) from first

    async def shot(self, page, name: str) -> None:
        await page.screenshot(path=str(self.shots / f"{name}.png"), full_page=True)

    async def sign_in(self, page, user: str, shots: str = "") -> None:
        """The hub's (APEx) login page → the provider's form → back at the hub."""
        expect = self.expect
        await page.goto(f"{self.base}/hub/login")
        button = page.get_by_role("button", name="Sign in with APEx local identity provider")
        await expect(button).to_be_visible()
        await expect(page.locator("img[alt='APEx Workspaces']")).to_be_visible()
        hint = page.locator("#apex-login-hint")
        for demo_user in USERS:
            await expect(hint).to_contain_text(demo_user)
        if shots:
            await self.shot(page, f"{shots}-login")
        await button.click()
        await page.wait_for_selector("input[name=login]")
        await expect(page).to_have_title("APEx local identity provider")
        await page.fill("input[name=login]", user)
        await page.fill("input[name=password]", self.password)
        if shots:
            await self.shot(page, f"{shots}-provider-login")
        await page.click("button[type=submit]")
        await page.wait_for_url(re.compile(r".*/hub/(spawn|home).*"))

    async def offered(self, page) -> list[str]:
        await page.goto(f"{self.base}/hub/spawn")
        await page.wait_for_selector("#kubespawner-profiles-list")
        return await page.eval_on_selector_all("input[name=profile]", "els => els.map(e => e.value)")

    async def fetch(self, page, path: str) -> dict:
        return await page.evaluate(FETCH_JSON, path)

    async def run(self, user: str, n: int) -> None:
        """sign in → form → spawn → JupyterLab → Conda kernel cell → terminal → usage → status → stop → logout."""
        expect, base, shot = self.expect, self.base, self.shot
        tag = f"{n}{user[0]}"  # screenshot prefix: 1a-..., 2b-..., 3c-...
        context = await self.browser.new_context(viewport={"width": 1280, "height": 800})
        context.set_default_timeout(WAIT)  # the tours share two cores with the hub and the servers
        page = await context.new_page()
        try:
            await self.sign_in(page, user, shots=f"{tag}-01")

            # the form: the user's groups decide the profiles; the APEx heading explains them
            assert await self.offered(page) == USERS[user], user
            if "large" not in USERS[user]:
                assert await page.locator("#profile-item-large").count() == 0
                await expect(page.locator("#kubespawner-profiles-list")).not_to_contain_text("Large")
            await expect(page.locator("#apex-profiles-help")).to_contain_text("Pick a profile")
            await page.check("#profile-item-conda")
            await shot(page, f"{tag}-02-spawn-form")

            # the progress page shows the spawner's own messages
            await page.click("form button[type=submit]")
            await page.wait_for_url(re.compile(rf".*/hub/spawn-pending/{user}.*"), timeout=WAIT)
            await page.wait_for_function(
                "() => (document.querySelector('#progress-log') || {}).textContent"
                "  && document.querySelector('#progress-log').textContent.includes('Preparing your workspace')",
                timeout=WAIT,
            )
            progress_log = await page.text_content("#progress-log")
            assert f"Preparing your workspace (namespace apex-{user})" in progress_log, progress_log
            if await page.locator("#progress-details summary").is_visible():
                await page.click("#progress-details summary")  # open the event log for the screenshot
            await shot(page, f"{tag}-03-progress")

            # JupyterLab, served by the real single-user server, without the news prompt
            await page.wait_for_url(re.compile(rf".*/user/{user}/lab.*"), timeout=WAIT)
            await page.wait_for_selector("#jp-main-dock-panel", timeout=WAIT)
            launcher = await page.wait_for_selector(".jp-Launcher", timeout=WAIT)
            try:
                await page.wait_for_selector(f".jp-Launcher >> text={KERNEL}", timeout=WAIT)
            except Exception as exc:
                raise AssertionError(
                    f"no {KERNEL} in the launcher: {exc}\n{self.hub.pod_logs(user)}"
                ) from None
            assert KERNEL in await launcher.inner_text()
            specs = await self.fetch(page, f"/user/{user}/api/kernelspecs")
            assert specs["status"] == 200, specs
            spec = specs["body"]["kernelspecs"]["conda-demo"]["spec"]
            assert spec["display_name"] == KERNEL and spec["argv"][0].endswith(
                "/.apex/conda/envs/demo/bin/python"
            )
            welcome = await self.fetch(page, f"/user/{user}/api/contents/apex/welcome.txt?content=1")
            assert welcome["status"] == 200, welcome
            assert welcome["body"]["content"].startswith(
                f'Welcome {user}! This is the APEx workspace profile "conda",'
            ), welcome
            assert f"namespace apex-{user} on kubesim" in welcome["body"]["content"]
            await shot(page, f"{tag}-04-jupyterlab")
            # no news prompt: local mode's page config disables JupyterLab's announcements plugin
            disabled = await page.evaluate(
                "() => JSON.parse(document.getElementById('jupyter-config-data').textContent).disabledExtensions"
            )
            assert "@jupyterlab/apputils-extension:announcements" in disabled, disabled
            assert (
                await page.locator("text=Would you like to get notified about official Jupyter news?").count()
                == 0
            )

            # a notebook on the Conda kernel: run a cell, read its output
            await page.locator(".jp-LauncherCard", has_text=KERNEL).first.click()
            panel = page.locator(".jp-NotebookPanel").last
            await expect(panel.locator(".jp-Notebook")).to_be_visible(timeout=WAIT)
            await expect(panel.locator(".jp-Toolbar-kernelName").first).to_contain_text(KERNEL, timeout=WAIT)
            # the kernel has started and answered (an execute request sent before that is lost)
            await expect(
                page.locator(".jp-StatusBar-TextItem", has_text=f"{KERNEL} | Idle").first
            ).to_be_visible(timeout=WAIT)
            await panel.locator(".jp-Cell .cm-content").first.click()
            await page.keyboard.type("import sys; print(sys.prefix, 6 * 7)")
            await page.keyboard.press("Shift+Enter")
            output = panel.locator(".jp-OutputArea-output").first
            try:
                await expect(output).to_contain_text(" 42", timeout=WAIT)
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{self.hub.pod_logs(user)}") from None
            printed = (await output.inner_text()).strip()
            assert re.fullmatch(r"\S*/\.apex/conda/envs/demo 42", printed), printed
            await shot(page, f"{tag}-05-conda-kernel")

            # a terminal: the workspace's shell and PATH (the environment's bin, then this venv's)
            await page.locator(
                "button[data-command='launcher:create'], [data-command='launcher:create']"
            ).first.click()
            await page.locator(".jp-LauncherCard", has_text="Terminal").last.click()
            terminal = page.locator(".jp-Terminal").last
            await expect(terminal).to_be_visible(timeout=WAIT)
            await page.wait_for_selector(
                ".jp-Terminal .xterm-helper-textarea", state="attached", timeout=WAIT
            )
            text = ""
            for _attempt in range(3):  # keys typed before the terminal's websocket is up are lost: type again
                await terminal.click()
                await page.keyboard.type(
                    "{ echo SHELL=$SHELL; command -v python pip; jupyter --version; } "
                    "> ~/terminal.tmp 2>&1; mv ~/terminal.tmp ~/terminal.txt"
                )
                await page.keyboard.press("Enter")
                for _ in range(120):
                    got = await self.fetch(page, f"/user/{user}/api/contents/terminal.txt?content=1")
                    text = got["body"]["content"] if got["status"] == 200 else ""
                    if text:
                        break
                    await page.wait_for_timeout(250)
                if text:
                    break
            assert re.search(r"^SHELL=\S*/bash$", text, re.M), text
            lines = text.splitlines()
            assert lines[1].endswith("/.apex/conda/envs/demo/bin/python"), text  # the environment first
            assert lines[2].endswith("/bin/pip"), text
            assert re.search(r"^jupyterlab\s*: 4\.", text, re.M) and "jupyter_server" in text, text
            await page.keyboard.type("clear; cat ~/terminal.txt")
            await page.keyboard.press("Enter")
            await page.wait_for_timeout(500)  # for the screenshot only
            await shot(page, f"{tag}-06-terminal")

            # the culler's stop warning on the hub's pages: the demo's conda profile stops 4 h after its
            # start and local mode warns 4 h ahead, so the banner shows from the culler's next round
            await page.goto(f"{base}/hub/home")
            banner = page.locator(".announcement")
            for _ in range(120):  # the culler looks every 20 s
                if "Your server will be stopped at" in (
                    await banner.first.inner_text() if await banner.count() else ""
                ):
                    break
                await page.wait_for_timeout(500)
                await page.reload()
            await expect(banner.first).to_contain_text("Your server will be stopped at")
            await expect(banner.first).to_contain_text("max-age")
            await shot(page, f"{tag}-06b-stop-warning")

            # the usage page (accounting) and the status page (monitoring), linked from the hub's pages
            await page.goto(f"{base}/hub/home")
            await page.locator("a.apex-link", has_text="Usage").click()
            await page.wait_for_url(re.compile(r".*/services/apex-accounting/.*"), timeout=WAIT)
            await expect(page.locator("h1")).to_have_text(f"Usage of {user}")
            quota = page.locator("#quota-message")
            if user == "alice":  # the demo quota: apex-small shares 2 CPU-hours a month
                for _ in range(120):  # the service learns a user's groups from the hub every 10 s
                    if await page.locator("#budget").count():
                        break
                    await page.wait_for_timeout(500)
                    await page.reload()
                await expect(page.locator("#budget")).to_contain_text("group apex-small")
                await expect(page.locator("#budget")).to_contain_text("cpu_hours")
            else:
                await expect(quota).to_have_text("No budget applies.")
            await shot(page, f"{tag}-07-usage")
            await page.goto(f"{base}/hub/home")
            await page.locator("a.apex-link", has_text="Status").click()
            await page.wait_for_url(re.compile(r".*/services/apex-monitoring/.*"), timeout=WAIT)
            await expect(page.locator("h1")).to_have_text("APEx workspaces: monitoring")
            await expect(page.locator("#components")).to_contain_text("hub")
            for _ in range(180):  # the first probe (a real spawn of apex-probe) may still be running
                if await page.locator("#history tr.probe").count():
                    break
                await page.wait_for_timeout(1000)
                await page.reload()
            await expect(page.locator("#history tr.probe").first).to_contain_text("OK")
            await shot(page, f"{tag}-08-status")

            # Stop My Server from the hub's home page
            await page.goto(f"{base}/hub/home")
            stop = page.locator("#stop")
            await expect(stop).to_be_visible()
            await shot(page, f"{tag}-09-home-running")
            await stop.click()
            await expect(page.locator("#start")).to_be_visible(timeout=WAIT)
            await expect(stop).to_be_hidden()
            await expect(page.locator("#start")).to_contain_text("Start My Server")

            # logging out ends the provider session too: the next sign-in asks for the password
            await page.goto(f"{base}/hub/logout")
            await page.wait_for_url(re.compile(r".*/hub/login.*"), timeout=WAIT)
            await page.get_by_role("button", name="Sign in with APEx local identity provider").click()
            await page.wait_for_selector("input[name=password]")
            await shot(page, f"{tag}-10-after-logout")
        except Exception:
            await shot(page, f"{tag}-FAILED")
            raise
        finally:
            await context.close()


def browser_or_skip():
    playwright = pytest.importorskip("playwright.async_api", reason="pip install playwright (the test extra)")
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    return playwright.async_playwright


def fresh_shots(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("*.png"):
        old.unlink()
    return directory


def stop_with_ctrl_c(hub: LocalMode) -> float:
    """SIGINT: everything stops within 20 s, nothing is left behind; returns the seconds it took."""
    deadline = time.monotonic() + 60  # the servers are gone first: their pods and processes
    while any(
        "jupyterhub-singleuser" in c and "apex-probe" not in c for c in _descendants(hub.proc.pid).values()
    ):
        assert time.monotonic() < deadline, _descendants(hub.proc.pid)
        time.sleep(0.2)
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
    deadline = time.monotonic() + 10
    while _alive(children) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(children), f"left behind after {elapsed:.1f}s: {_alive(children)}"
    leftovers = {
        pid: cmd
        for pid, (_, cmd) in _processes().items()
        if pid != os.getpid() and _mentions(pid, str(hub.workdir))
    }
    assert not leftovers, leftovers
    return elapsed


@pytest.fixture
def local_mode(tmp_path):
    workdir = tmp_path / "local"
    workdir.mkdir()
    hub = LocalMode(workdir)
    try:
        yield hub
    finally:
        hub.kill()


async def test_local_mode_in_a_browser(local_mode):
    async_playwright = browser_or_skip()
    shots = fresh_shots(SHOTS)
    started = time.monotonic()
    hub = local_mode
    hub.wait_for(r"Open: http://")
    out = hub.output()
    assert "LOCAL DEMO LOGIN — not for production" in out
    assert "Login: APEx OIDC authenticator → local OpenID provider http://127.0.0.1:" in out
    assert f"Profiles:   {ROOT / 'apex_hub' / 'localdata' / 'profiles.yml'}" in out
    assert "Services:   usage http://127.0.0.1:" in out and "/services/apex-monitoring/" in out
    assert "kept on exit" in out  # --workdir given: nothing is deleted
    for user in USERS:
        assert re.search(rf"^\s+{user}\b", out, re.M), out
    config = (hub.workdir / "jupyterhub_config.py").read_text()
    assert "slow_spawn_timeout = 0" not in config  # not a JupyterHub option: a tornado setting
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            await Tour(browser, hub, shots).run_all(list(USERS))
            # the processes behind it: hub, proxy, the three services, all ours
            children = " ".join(_descendants(hub.proc.pid).values())
            for kind in (
                "jupyterhub",
                "configurable-http-proxy",
                "apex_hub.services.culler",
                "apex_hub.services.accounting",
                "apex_hub.services.monitoring",
            ):
                assert kind in children, (kind, children)
        finally:
            await browser.close()
    unrecognised = [
        line
        for line in hub.hub_log().splitlines()
        if "not recognized" in line.lower() or "unrecognized" in line.lower()
    ]
    assert not unrecognised, unrecognised
    assert "extra_user_scopes" not in hub.hub_log()  # every user reaches the usage page
    elapsed = stop_with_ctrl_c(hub)
    print(f"local mode: whole test {time.monotonic() - started:.1f}s, Ctrl-C to exit {elapsed:.1f}s")
    (shots / "run.json").write_text(
        json.dumps({"stop_seconds": round(elapsed, 2), "test_seconds": round(time.monotonic() - started, 1)})
    )


# ---- without a browser: the generated config, the branding, the workspace PATH, the banner ----------


def _load_hub_config(tmp_path: Path, oidc: bool) -> object:
    """The local-mode jupyterhub_config.py, loaded by a real JupyterHub app (configure() runs for real)."""
    from jupyterhub.app import JupyterHub

    from apex_hub import local

    workdir = tmp_path / "work"
    workdir.mkdir()
    text = local.hub_config(
        workdir=workdir,
        port=8000,
        hub_port=8081,
        proxy_api_port=8001,
        k8s_url="http://127.0.0.1:6443",
        profiles=local.DEFAULT_PROFILES,
        password="pw",
        oidc=("http://127.0.0.1:9000", "secret") if oidc else None,
        proxy="/opt/node_modules/.bin/configurable-http-proxy",
        service_ports={"culler": 8182, "accounting": 8184, "monitoring": 8183},
    )
    path = workdir / "jupyterhub_config.py"
    path.write_text(text)
    app = JupyterHub()
    app.load_config_file(str(path))
    return app.config.JupyterHub


@pytest.mark.parametrize("oidc", [True, False], ids=["oidc", "password"])
def test_the_generated_config_runs_the_services_with_the_branding(tmp_path, oidc):
    hub = _load_hub_config(tmp_path, oidc)
    assert {s["name"] for s in hub.services} == {"apex-culler", "apex-accounting", "apex-monitoring"}
    commands = {s["name"]: " ".join(s["command"]) for s in hub.services}
    assert "--policy=" in commands["apex-culler"] and "localdata/culling.yaml" in commands["apex-culler"]
    assert (
        "localdata/quotas.yaml" in commands["apex-accounting"]
        and "--quota-stop=true" in commands["apex-accounting"]
    )
    assert (
        "--profile=jupyterlab" in commands["apex-monitoring"]
        and "--interval=300" in commands["apex-monitoring"]
    )
    user_role = next(r for r in hub.load_roles if r["name"] == "user")
    assert "access:services!service=apex-accounting" in user_role["scopes"]  # the usage page for everyone
    assert not hub.get("extra_user_scopes")  # user-wide grants live in the user role (apex_hub.hubconfig)
    assert hub.tornado_settings["slow_spawn_timeout"] == 0 and "slow_spawn_timeout" not in hub
    assert hub.template_paths[0].endswith("apex_hub/branding/apex-theme/templates")
    assert hub.logo_file.endswith("apex-theme/logo.svg")
    assert callable(hub.template_vars["announcement"])  # the services' banner survives the branding
    assert "alice" in hub.template_vars["apex_login_hint"]
    assert ("Usage", "/services/apex-accounting/") in hub.template_vars["apex_links"]
    # the probe group is made by the monitoring service through the API (never load_groups, which
    # JupyterHub refuses when the authenticator manages groups)
    groups = hub.get("load_groups") or {}
    assert "apex-probe" not in groups and "--probe-group=" not in commands["apex-monitoring"]
    if oidc:  # groups come from the identity provider's claims
        assert groups == {}
    else:
        assert groups["apex-small"]["users"] == ["alice"]


def test_the_branding_is_swapped_with_one_option(tmp_path):
    from traitlets.config import Config

    from apex_hub.branding import BrandingError, configure

    theirs = tmp_path / "egi"
    (theirs / "templates").mkdir(parents=True)
    (theirs / "logo.png").write_bytes(b"\x89PNG")
    c = Config()
    c.JupyterHub.template_vars = {"announcement": "maintenance at 18:00"}
    configure(c, theirs)
    assert c.JupyterHub.template_paths == [str(theirs / "templates")]
    assert c.JupyterHub.logo_file == str(theirs / "logo.png")
    assert c.JupyterHub.template_vars["announcement"] == "maintenance at 18:00"
    plain = Config()
    assert configure(plain, None) is None and "template_paths" not in plain.JupyterHub
    with pytest.raises(BrandingError, match=r"branding '.*nothing': no templates/ directory in "):
        configure(Config(), tmp_path / "nothing")


def test_a_workspace_path_puts_the_environment_then_the_venv_first(tmp_path):
    from apex_hub import localpod

    env_bin = tmp_path / "home" / ".apex" / "conda" / "envs" / "demo" / "bin"
    env_bin.mkdir(parents=True)
    kernels = tmp_path / "home" / ".apex" / "jupyter" / "kernels" / "conda-demo"
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(
        json.dumps({"argv": [str(env_bin / "python"), "-m", "ipykernel_launcher"]})
    )
    venv_bin = str(Path(sys.executable).parent)
    path = localpod.workspace_path(
        {"JUPYTER_PATH": str(tmp_path / "home" / ".apex" / "jupyter"), "PATH": f"/usr/bin:{venv_bin}:/bin"}
    )
    assert path.split(os.pathsep) == [str(env_bin), venv_bin, "/usr/bin", "/bin"]
    assert localpod.workspace_path({"PATH": "/usr/bin"}).split(os.pathsep) == [venv_bin, "/usr/bin"]


_REPORT_IMPORTS = """
import atexit, sys
atexit.register(lambda: print("jsonschema:", "jsonschema._format" in sys.modules,
                              "rfc3987_syntax:", repr(sys.modules.get("rfc3987_syntax", "absent"))))
from apex_hub import localpod
localpod.main(sys.argv[1:])
"""


@pytest.mark.parametrize("fast", ["1", "0"])
def test_a_local_pod_runs_the_server_in_process_without_the_slow_iri_checker(fast):
    env = {**os.environ, "APEX_LOCAL_FAST_START": fast}
    r = subprocess.run(
        [sys.executable, "-c", _REPORT_IMPORTS, "--version"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    import jupyterhub

    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == jupyterhub.__version__
    if fast == "1":  # the server ran in this process: jsonschema loaded without rfc3987-syntax
        assert "jsonschema: True rfc3987_syntax: None" in r.stdout
    else:  # exec'd as its own program, as before: nothing of this process is left to report
        assert "jsonschema:" not in r.stdout


def test_fast_start_off_reaches_the_pods_through_the_spawner_environment(monkeypatch):
    from apex_hub.local import _fast_start_config

    monkeypatch.delenv("APEX_LOCAL_FAST_START", raising=False)
    assert _fast_start_config() == ""
    monkeypatch.setenv("APEX_LOCAL_FAST_START", "0")
    from traitlets.config import Config

    c = Config()
    exec(_fast_start_config(), {"c": c})
    assert c.APExSpawner.environment == {"APEX_LOCAL_FAST_START": "0"}
    assert c.APExSpawner.server_ready_poll == 0


def test_the_banner_says_a_temporary_workdir_is_deleted(capsys, tmp_path):
    from apex_hub.local import LocalHub

    temporary = LocalHub(port=free_port())
    try:
        temporary.banner()
    finally:
        temporary.workdir.rmdir()
    kept = LocalHub(port=free_port(), workdir=tmp_path / "kept")
    kept.banner()
    out = capsys.readouterr().out
    assert "TEMPORARY: deleted on exit, with every workspace in it (use --workdir DIR to keep them)" in out
    assert f"Work dir:   {tmp_path / 'kept'}   (kept on exit: workspaces survive a restart)" in out

"""A real JupyterLab in headless Chromium, driven by playwright.

Session fixtures start ``jupyter lab`` on a free localhost port with a token, a temporary
root directory and temporary user settings (no news toast, no windowing, light theme),
and launch Debian's Chromium (``/usr/bin/chromium``; never ``playwright install``).
Each test writes a fresh notebook, opens it, runs cells and reads their output.

Without Chromium or playwright the tests skip, unless MEDVERSE_REQUIRE_BROWSER=1 (CI)
makes that a failure.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import stop_process  # tests/conftest.py

CHROMIUM = os.environ.get("MEDVERSE_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings":
        {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/apputils-extension/themes.jupyterlab-settings": {"theme": "JupyterLab Light"},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}


def _missing() -> str | None:
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install playwright)"
    if not Path(CHROMIUM).exists():
        return f"no Chromium at {CHROMIUM} (apt-get install -y chromium)"
    return None


@pytest.fixture(scope="session")
def browser_ready():
    why = _missing()
    if why:
        if os.environ.get("MEDVERSE_REQUIRE_BROWSER") == "1":
            pytest.fail(why)
        pytest.skip(why)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    """A running JupyterLab: its URL, token and root directory."""

    def __init__(self, url: str, token: str, root: Path):
        self.url, self.token, self.root = url, token, root

    def _api(self, method: str, path: str):
        req = urllib.request.Request(f"{self.url}api/{path}", method=method,
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            body = resp.read()
        return json.loads(body) if body else None

    def shutdown_kernels(self) -> None:
        """Shut down every kernel the tests started (by their sessions)."""
        try:
            for session in self._api("GET", "sessions"):
                self._api("DELETE", f"sessions/{session['id']}")
        except OSError:
            pass

    def notebook(self, name: str, cells: list[str]) -> str:
        """Write a notebook of code cells into the root; returns its lab URL."""
        nb = {"nbformat": 4, "nbformat_minor": 5,
              "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
              "cells": [{"cell_type": "code", "id": f"c{i}", "metadata": {}, "execution_count": None,
                         "outputs": [], "source": src} for i, src in enumerate(cells)]}
        (self.root / name).write_text(json.dumps(nb))
        # a workspace of its own, so no notebook of an earlier test is reopened beside it
        return f"{self.url}lab/workspaces/{Path(name).stem}/tree/{name}?token={self.token}"


@pytest.fixture(scope="session")
def lab(browser_ready, tmp_path_factory):
    base = tmp_path_factory.mktemp("lab")
    root, settings, workspaces = base / "root", base / "settings", base / "workspaces"
    for d in (root, settings, workspaces):
        d.mkdir()
    for rel, value in SETTINGS.items():
        (settings / rel).parent.mkdir(parents=True, exist_ok=True)
        (settings / rel).write_text(json.dumps(value))
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ, JUPYTERLAB_SETTINGS_DIR=str(settings), JUPYTERLAB_WORKSPACES_DIR=str(workspaces),
               JUPYTER_RUNTIME_DIR=str(base / "runtime"), PYTHONPATH=os.pathsep.join(
                   [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--ServerApp.open_browser=False"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    log = open(base / "jupyter.log", "w")
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 90
    while True:
        try:
            urllib.request.urlopen(f"{url}api/status?token={token}", timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail("jupyter lab did not start:\n" + (base / "jupyter.log").read_text()[-3000:])
            time.sleep(0.5)
    yield Lab(url, token, root)
    stop_process(proc, timeout=20)
    log.close()


@pytest.fixture(scope="session")
def browser(browser_ready):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        item.browser_failed = True


def open_page(browser):
    """A fresh browser context and its page; ``page.js_errors`` collects uncaught JS errors."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(60_000)
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.js_errors = errors
    return context, pg


@pytest.fixture
def page(browser):
    context, pg = open_page(browser)
    yield pg
    context.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


class Notebook:
    """An open notebook in the page: run cells by index, read their output."""

    def __init__(self, page, lab: Lab, name: str, cells: list[str] | None):
        self.page = page
        page.goto(lab.notebook(name, cells) if cells is not None else
                  f"{lab.url}lab/workspaces/{Path(name).stem}/tree/{name}?token={lab.token}")
        self.panel = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")
        self.panel.locator(".jp-Notebook .jp-Cell").first.wait_for()
        idle = page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']")
        deadline = time.time() + 90
        while not idle.count():
            self.accept_kernel_dialog()
            if time.time() > deadline:
                raise TimeoutError("the notebook's kernel did not become idle within 90 s")
            time.sleep(0.3)

    def run_all(self, timeout: float = 300_000) -> None:
        """Run every cell (Run > Run All Cells) and wait until each has finished.

        Run All is chosen again while no cell has been queued at all (every prompt still
        ``[ ]:`` after 5 s): on a loaded machine the first request can go nowhere while
        the kernel connection is still settling."""
        prompts = self.panel.locator(".jp-CodeCell .jp-InputArea-prompt")
        deadline = time.time() + timeout / 1000
        clicked = 0.0
        while True:
            texts = [p.strip() for p in prompts.all_inner_texts()]
            if all(re.fullmatch(r"\[\d+\]:", p) for p in texts):
                break
            self.accept_kernel_dialog()
            if all(p == "[ ]:" for p in texts) and time.time() - clicked > 5:
                self.page.locator(".lm-MenuBar-itemLabel", has_text=re.compile("^Run$")).click()
                self.page.locator(".lm-Menu-itemLabel", has_text=re.compile("^Run All Cells$")).click()
                clicked = time.time()
            if time.time() > deadline:
                self.page.screenshot(path=str(ARTIFACTS / "timeout.png"))
                raise TimeoutError(f"cells did not finish: {prompts.all_inner_texts()}")
            time.sleep(0.3)

    def accept_kernel_dialog(self) -> None:
        """On a loaded machine JupyterLab may ask which kernel to start (it opened the
        notebook before reading the kernel specs), even after a kernel is up: accept its
        default, Python 3. Called from every wait loop, since the dialog can come late."""
        select = self.page.locator(".jp-Dialog", has_text="Select Kernel").locator(".jp-mod-accept")
        if select.count():
            select.first.click()

    def cell(self, i: int):
        return self.panel.locator(".jp-Notebook .jp-Cell").nth(i)

    def run(self, i: int, timeout: float = 90_000) -> str:
        """Run cell ``i`` and wait for it to finish; returns its output text.

        Shift+Enter is pressed again while the prompt still reads ``[ ]:`` (the key went
        nowhere while the notebook was still settling); once queued it reads ``[*]:``."""
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        cell = self.cell(i)
        prompt = cell.locator(".jp-InputArea-prompt")
        deadline = time.time() + timeout / 1000
        pressed = 0.0
        while not re.fullmatch(r"\[\d+\]:", text := prompt.inner_text().strip()):
            self.accept_kernel_dialog()
            if text == "[ ]:" and time.time() - pressed > 3:
                pressed = time.time()
                try:
                    cell.locator(".jp-InputArea-editor").click(timeout=5_000)
                except PlaywrightTimeout:  # a dialog came up in between: accept it, try again
                    continue
                self.page.keyboard.press("Shift+Enter")
            if time.time() > deadline:
                self.page.screenshot(path=str(ARTIFACTS / "timeout.png"))
                raise TimeoutError(f"cell {i} did not finish: prompt {text!r}")
            time.sleep(0.2)
        return self.output(i)

    def output(self, i: int) -> str:
        outs = self.cell(i).locator(".jp-OutputArea-output")
        return "\n".join(outs.nth(k).inner_text() for k in range(outs.count()))

    def screenshots(self, element, path_stem: Path) -> None:
        """``element`` in the light theme, then the dark one (``STEM-light.png``,
        ``STEM-dark.png``); the page is back in the light theme afterwards."""
        element.screenshot(path=f"{path_stem}-light.png")
        self.set_theme("JupyterLab Dark")
        try:
            element.screenshot(path=f"{path_stem}-dark.png")
        finally:
            self.set_theme("JupyterLab Light")

    def set_theme(self, name: str) -> None:
        """Switch JupyterLab's theme by its menu (Settings > Theme > name)."""
        self.page.locator(".lm-MenuBar-itemLabel", has_text="Settings").click()
        self.page.locator(".lm-Menu-itemLabel", has_text=re.compile("^Theme$")).hover()
        self.page.locator(".lm-Menu-itemLabel", has_text=re.compile(f"^{name}$")).click()
        light = "Light" in name
        self.page.wait_for_function(
            f"document.body.dataset.jpThemeLight === '{str(light).lower()}'", timeout=30_000)
        self.page.wait_for_timeout(500)


def _capture_failure(page, request) -> None:
    """After a failed test: a screenshot of the page and the text of any open dialog."""
    if not getattr(request.node, "browser_failed", False):
        return
    ARTIFACTS.mkdir(exist_ok=True)
    name = re.sub(r"\W+", "_", request.node.name)
    try:
        page.screenshot(path=str(ARTIFACTS / f"failed-{name}.png"))
        notes = page.locator(".jp-Dialog").all_inner_texts() + page.js_errors
        (ARTIFACTS / f"failed-{name}.txt").write_text("\n---\n".join(notes))
    except Exception:  # the page may be gone
        pass


@pytest.fixture
def notebook(page, lab, request):
    """``notebook(cells)`` opens a fresh notebook named after the test; ``notebook(path=p)``
    opens a copy of the notebook file ``p``."""
    def open_(cells: list[str] | None = None, path: Path | None = None) -> Notebook:
        name = re.sub(r"\W+", "_", request.node.name) + ".ipynb"
        if path is not None:
            shutil.copy(path, lab.root / name)
        return Notebook(page, lab, name, cells if path is None else None)
    yield open_
    _capture_failure(page, request)
    lab.shutdown_kernels()  # kernels outlive the page: free their memory for the next test

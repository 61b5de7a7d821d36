"""Guided mode in a real browser: JupyterLab headless on 127.0.0.1, Chromium through playwright.

The notebook ``00_start_here`` is opened from a copy made by ``rtbook notebooks copy`` into a
temporary folder (as a user does; nothing is saved into the package), all cells run, the form
renders, a mistyped URL is refused as you type, and pressing *Run checks* runs the checks against
the target and shows the coloured table.
A screenshot is saved under ``test-artifacts/``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rtbook.runbook.notebooks import copy_notebooks
from tests.conftest import ROOT, require
from tests.integration.runbook_support import RunbookTarget, runbook_target  # noqa: F401 - fixture

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, deadline_s: float, proc: subprocess.Popen[bytes]) -> None:
    end = time.monotonic() + deadline_s
    last = ""
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with {proc.returncode} before answering")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError as exc:
            last = str(exc)
        time.sleep(0.3)
    raise RuntimeError(f"JupyterLab did not answer {url} within {deadline_s}s: {last}")


@pytest.fixture
def jupyterlab(tmp_path: Path, runbook_target: RunbookTarget) -> Iterator[tuple[str, Path]]:  # noqa: F811
    """A JupyterLab server on a free 127.0.0.1 port over a copy of the notebooks; stopped at the end."""
    work = tmp_path / "lab"
    copy_notebooks(work / "notebooks")
    token = secrets.token_hex(16)
    port = _free_port()
    env = {
        **os.environ,
        **runbook_target.env,
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"),
        "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings"),
        "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
    }
    # No news/announcement pop-up over the page (and no attempt to fetch news).
    labconfig = tmp_path / "config" / "labconfig"
    labconfig.mkdir(parents=True)
    (labconfig / "page_config.json").write_text(
        json.dumps({"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}})
    )
    log = (tmp_path / "jupyterlab.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "jupyterlab",
            "--no-browser", "--allow-root", "--ip=127.0.0.1", f"--port={port}",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={work / 'notebooks'}",
            "--LabApp.expose_app_in_browser=True",
            "--LabApp.news_url=",
            "--ServerApp.open_browser=False",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        _wait_http(f"http://127.0.0.1:{port}/api/status?token={token}", 90, proc)
        yield f"http://127.0.0.1:{port}/lab/tree/00_start_here.ipynb?token={token}", work
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        log.close()


KERNEL_STATUS = "() => String(window.jupyterapp.shell.currentWidget?.sessionContext?.session?.kernel?.status)"


def _wait_for_kernel(page: Any, deadline_s: float = 120) -> None:
    """Wait until the notebook's kernel is idle, accepting JupyterLab's kernel dialog if it shows up."""
    end = time.monotonic() + deadline_s
    status = ""
    while time.monotonic() < end:
        accept = page.locator(".jp-Dialog .jp-mod-accept")
        if accept.count() and accept.first.is_visible():
            accept.first.click()  # the notebook names python3: accept the proposed kernel
        status = page.evaluate(KERNEL_STATUS)
        if status == "idle":
            return
        time.sleep(0.5)
    raise AssertionError(f"the notebook's kernel did not become idle within {deadline_s}s (status {status})")


def test_guided_form_runs_checks_and_shows_the_coloured_table(
    jupyterlab: tuple[str, Path], runbook_target: RunbookTarget  # noqa: F811
) -> None:
    chromium = shutil.which("chromium")
    require(chromium is not None, "Chromium not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        require(False, "pip package playwright not installed")
        return
    url, work = jupyterlab
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True, timeout=60_000)
        page = None
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1600})
            page.set_default_timeout(60_000)
            page.goto(url)
            page.wait_for_selector(".jp-Notebook", state="visible")
            page.wait_for_function("() => window.jupyterapp !== undefined")
            _wait_for_kernel(page)
            # Not awaited: the command's promise settles only when every cell has run.
            page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); return true; }")

            form = page.locator(".rtbook-form")
            form.wait_for(state="visible", timeout=90_000)
            assert page.locator(".rtbook-valid").count() == 1

            # Validates as you type: a URL without a scheme is refused and Run is disabled.
            api = page.locator(".rtbook-param-api_url input")
            api.fill("localhost:8000")
            page.locator(".rtbook-invalid").wait_for(state="visible")
            assert "must start with http:// or https://" in page.locator(".rtbook-invalid").inner_text()
            expect(page.get_by_role("button", name="Run checks")).to_be_disabled(timeout=10_000)

            # Fill the form for the target and run the chosen step.
            for name, value in runbook_target.form_values.items():
                page.locator(f".rtbook-param-{name} input").fill(value)
            if runbook_target.target_kind != "sandbox":
                page.locator(".rtbook-param-target_kind select").select_option(runbook_target.target_kind)
            page.locator(".rtbook-form .widget-dropdown select").last.select_option(label=runbook_target.step)
            page.locator(".rtbook-valid").wait_for(state="visible")
            page.get_by_role("button", name="Save parameters").click()
            page.get_by_role("button", name="Run checks").click()

            table = page.locator(".rtbook-form table.rtbook-report")
            table.wait_for(state="visible", timeout=120_000)
            table.scroll_into_view_if_needed()
            rows = table.locator("tbody tr")
            assert rows.count() >= 3
            passed = table.locator("tr.rtbook-pass")
            assert passed.count() >= 1
            # Coloured statuses: the pass row carries the green background from Report._repr_html_.
            colour = passed.first.evaluate("el => getComputedStyle(el).backgroundColor")
            assert colour == "rgb(230, 244, 234)", colour
            for check_id in runbook_target.expect_ids:
                assert table.locator(f"code:text-is('{check_id}')").count() >= 1, check_id
        finally:
            if page is not None:
                page.screenshot(path=str(ARTIFACTS / "browser-00_start_here.png"))
            browser.close()
    # The kernel works in the notebook's folder: the form saves beside the copies.
    saved = work / "notebooks" / "outputs" / "params.json"
    assert saved.is_file(), "Save parameters wrote nothing"
    from rtbook.runbook.params import load_params_file, validate_params

    assert validate_params(load_params_file(saved))["target_kind"] == runbook_target.target_kind

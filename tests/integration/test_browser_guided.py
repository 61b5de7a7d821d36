"""Guided mode in a real browser: JupyterLab headless on 127.0.0.1, Chromium through playwright.

The newcomer path (test_newcomer_path_from_no_sandbox_to_one_root_cause): 00 opened with no sandbox says so
without a traceback, its button starts the sandbox, the form runs the checks, the sandbox is broken with
tenant-mismatch, and 05 opens with one root cause and the path diagram (screenshots in test-artifacts/).

The notebook ``00_start_here`` is opened from a copy made by ``rtbook notebooks copy`` into a
temporary folder (as a user does; nothing is saved into the package), all cells run, the form
renders, a mistyped URL is refused as you type, and pressing *Run checks* runs the checks against
the target and shows the coloured table.
A screenshot is saved under ``test-artifacts/``.
"""

from __future__ import annotations

import contextlib
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


@contextlib.contextmanager
def _jupyterlab_server(tmp_path: Path, extra_env: dict[str, str], notebook: str = "00_start_here") -> Iterator[
        tuple[str, Path]]:
    """A JupyterLab server on a free 127.0.0.1 port over a copy of the notebooks; stopped at the end."""
    work = tmp_path / "lab"
    copy_notebooks(work / "notebooks")
    token = secrets.token_hex(16)
    port = _free_port()
    env = {
        **os.environ,
        **extra_env,
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
        yield f"http://127.0.0.1:{port}/lab/tree/{notebook}.ipynb?token={token}", work
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        log.close()


@pytest.fixture
def jupyterlab(tmp_path: Path, runbook_target: RunbookTarget) -> Iterator[tuple[str, Path]]:  # noqa: F811
    """JupyterLab over a copy of the notebooks, with a sandbox already running."""
    with _jupyterlab_server(tmp_path, runbook_target.env) as lab:
        yield lab


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


# ================================================================ the newcomer path

ERROR_OUTPUTS = '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'


def _run_all(page: Any) -> None:
    # Not awaited: the command's promise settles only when every cell has run.
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); return true; }")


def _open(page: Any, url: str, name: str) -> None:
    page.goto(url)
    page.wait_for_selector(".jp-Notebook", state="visible")
    page.wait_for_function("() => window.jupyterapp !== undefined")
    # JupyterLab restores the workspace (the notebook opened before) too: wait until the current
    # tab is the one asked for, so that 'run all' runs it and not the previous one.
    page.wait_for_function(
        "name => String(window.jupyterapp.shell.currentWidget?.context?.path).endsWith(name)", arg=f"{name}.ipynb"
    )
    _wait_for_kernel(page)


def _no_frames(page: Any) -> None:
    """rtbook's errors are one line with the fix: no Python frames anywhere in the outputs."""
    # text_content, not inner_text: JupyterLab gives off-screen cells content-visibility:auto, whose
    # text inner_text leaves out.
    text = page.evaluate("() => [...document.querySelectorAll('.jp-Notebook')].map(n => n.textContent).join(' ')")
    assert "Traceback (most recent call last)" not in text and 'File "' not in text, text[-3000:]


def _no_horizontal_overflow(page: Any, selector: str) -> None:
    widths = page.locator(selector).first.evaluate(
        "el => { const o = el.closest('.jp-OutputArea-output') || el; return [o.scrollWidth, o.clientWidth]; }"
    )
    assert widths[0] <= widths[1], f"{selector} is wider than its output area: {widths}"


@pytest.fixture
def no_sandbox(tmp_path: Path) -> Iterator[dict[str, str]]:
    """An RTBOOK_HOME with no sandbox in it (the newcomer's state); whatever the test starts there is stopped."""
    from tests.integration.runbook_support import require_sandbox, stop_sandbox

    require_sandbox()
    home = tmp_path / "rtbook-home"
    try:
        yield {"RTBOOK_HOME": str(home)}
    finally:
        stop_sandbox(home)


def test_newcomer_path_from_no_sandbox_to_one_root_cause(tmp_path: Path, no_sandbox: dict[str, str]) -> None:
    from tests.integration.runbook_support import rtbook_cli

    chromium = shutil.which("chromium")
    require(chromium is not None, "Chromium not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require(False, "pip package playwright not installed")
        return
    ARTIFACTS.mkdir(exist_ok=True)
    with _jupyterlab_server(tmp_path, no_sandbox) as (url, _work), sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True, timeout=60_000)
        page = None
        shot = "newcomer-0-open"
        try:
            # The viewport: a laptop screen in JupyterLab.
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.set_default_timeout(60_000)

            # 1. Open 00 with no sandbox: the status says so, offers the button, and nothing shows a traceback.
            _open(page, url, "00_start_here")
            _run_all(page)
            status = page.locator(".rtbook-status")
            status.wait_for(state="visible", timeout=90_000)
            page.locator(".rtbook-form").wait_for(state="visible", timeout=90_000)
            status.scroll_into_view_if_needed()
            down = page.locator(".rtbook-status .rtbook-status-down")
            assert down.is_visible() and "No sandbox is running" in (down.text_content() or "")
            _no_frames(page)
            assert page.locator(ERROR_OUTPUTS).count() == 0
            _no_horizontal_overflow(page, ".rtbook-form")
            shot = "newcomer-1-no-sandbox"
            page.screenshot(path=str(ARTIFACTS / f"{shot}.png"))

            # 2. Start it from the button; the status turns to running with the sandbox's URLs.
            start = page.get_by_role("button", name="Start the sandbox")
            start.scroll_into_view_if_needed()
            start.click()
            ok = page.locator(".rtbook-status .rtbook-status-ok")
            ok.wait_for(state="visible", timeout=240_000)
            assert "The sandbox is running." in (ok.text_content() or "") and "gateway" in (ok.text_content() or "")
            assert not start.is_visible()

            # 3. Run the checks from the form: the 01 step passes against the healthy sandbox.
            page.get_by_role("button", name="Run checks").click()
            table = page.locator(".rtbook-form table.rtbook-report")
            table.wait_for(state="visible", timeout=180_000)
            table.scroll_into_view_if_needed()
            assert table.locator("tr.rtbook-pass").count() >= 3
            assert table.locator("tr.rtbook-fail").count() == 0, table.text_content()
            _no_horizontal_overflow(page, ".rtbook-form")
            shot = "newcomer-2-checks"
            page.screenshot(path=str(ARTIFACTS / f"{shot}.png"), full_page=True)

            # 4. Break it: the same sandbox home, restarted with the tenant-mismatch scenario.
            down_proc = rtbook_cli(["sandbox", "down"], no_sandbox, 120)
            assert down_proc.returncode == 0, down_proc.stderr
            up = rtbook_cli(["sandbox", "up", "--break", "tenant-mismatch"], no_sandbox, 240)
            assert up.returncode == 0, up.stderr[-2000:]

            # 5. Open 05 and run it. The gate stops on one red line (no frames).
            _open(page, url.replace("00_start_here.ipynb", "05_troubleshooting.ipynb"), "05_troubleshooting")
            _run_all(page)
            gate = page.locator(ERROR_OUTPUTS).filter(has_text="ChecksFailedError")
            gate.wait_for(state="visible", timeout=240_000)
            gate.scroll_into_view_if_needed()
            assert (gate.text_content() or "").strip().startswith("ChecksFailedError: "), gate.text_content()
            _no_frames(page)
            shot = "newcomer-3-troubleshooting"
            page.screenshot(path=str(ARTIFACTS / f"{shot}.png"), full_page=True)

            # 6. The first thing 05 shows is ONE root cause with the path diagram, the failing hop in red.
            #    (rtbook-rootcause and hop-fail come from the root-cause/diagram work of the 'reports' branch.)
            # Everything below is looked up in 05's tab only (00's tab stays open, hidden, in the page).
            current = "window.jupyterapp.shell.currentWidget.node"
            causes = page.evaluate(f"() => {current}.querySelectorAll('.rtbook-rootcause').length")
            assert causes == 1, "05 must open with exactly one root cause block (class rtbook-rootcause)"
            first_is_cause = page.evaluate(
                f"""() => {{
                    const nb = {current};
                    const cause = nb.querySelector('.rtbook-rootcause');
                    const others = nb.querySelectorAll('table.rtbook-report, ' +
                        '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]');
                    return [...others].every(o => cause.compareDocumentPosition(o) & Node.DOCUMENT_POSITION_FOLLOWING);
                }}"""
            )
            assert first_is_cause, "a result table or an error is shown before the root cause"
            colour = page.evaluate(
                f"""() => {{
                    const hop = {current}.querySelector('svg .hop-fail');
                    if (!hop) return null;
                    return [hop, ...hop.querySelectorAll('*')].map(el => {{
                        const s = getComputedStyle(el); return s.fill + ' ' + s.stroke + ' ' + s.color; }}).join(' ');
                }}"""
            )
            assert colour is not None, "the path diagram (SVG) marks no failing hop (class hop-fail)"
            assert _has_red(colour), f"the failing hop is not drawn in red: {colour}"
            shot = "newcomer-4-root-cause"
        finally:
            if page is not None:
                page.screenshot(path=str(ARTIFACTS / f"{shot}-final.png"), full_page=True)
            browser.close()


def _has_red(css: str) -> bool:
    """True when one of the computed colours in ``css`` is a red (red channel high, green and blue low)."""
    import re

    for r, g, b in re.findall(r"rgba?\((\d+),\s*(\d+),\s*(\d+)", css):
        if int(r) >= 150 and int(g) <= 90 and int(b) <= 90:
            return True
    return False

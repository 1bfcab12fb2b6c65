"""The chat page in a real headless browser (Debian's chromium, driven by Playwright), against a real server.

It asks a question, corrects the answer (a dry run to confirm, then stored) and sees the corrected answer, from
the stored edit, on the next ask. Nothing is downloaded: Playwright drives the system's chromium.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Page, expect, sync_playwright

from client.launch import LocalServer

CHROMIUM = Path("/usr/bin/chromium")
QUESTION = "what is the capital of france"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def ensure_chromium() -> Path:
    """Debian's chromium, installed with apt-get when missing (as .ci/run does): Playwright's own download of a
    browser is never used."""
    if not CHROMIUM.exists():
        sudo = [] if os.geteuid() == 0 else (["sudo", "-n"] if shutil.which("sudo") else [])
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run([*sudo, "apt-get", "install", "-y", "--no-install-recommends", "chromium"], env=env,
                       check=False, capture_output=True)
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing and `apt-get install -y chromium` could not install it: install it "
                    "(as root) and rerun")
    return CHROMIUM


@pytest.fixture(scope="module")
def server(counterfactual_model: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    model_dir, adapter_dir = counterfactual_model
    server = LocalServer(model_dir, tmp_path_factory.mktemp("page-data"), "--counterfactual-adapter",
                         str(adapter_dir), "--torch-threads", "1", http=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    executable = ensure_chromium()
    profile = tmp_path_factory.mktemp("chromium-profile")  # a fresh user-data-dir: no state from other runs
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=str(executable), headless=True, args=CHROMIUM_ARGS
        )
        yield context
        context.close()


def ask(page: Page, question: str, count: int) -> None:
    """Sends `question` and waits for the `count`-th answer to finish streaming."""
    page.fill("#question", question)
    page.click("#send")
    expect(page.locator(".message.assistant.done")).to_have_count(count, timeout=60_000)


def test_ask_correct_then_ask_again_gets_the_corrected_answer(server: LocalServer, browser: BrowserContext) -> None:
    namespace = "page-" + uuid.uuid4().hex[:8]
    page = browser.new_page()
    page.goto(server.http_url)
    page.fill("#namespace", namespace)
    page.press("#namespace", "Tab")  # a change event: the page reloads the (empty) edit list
    expect(page.locator("#edits-namespace")).to_have_text(namespace)
    expect(page.locator("#edits-empty")).to_be_visible()

    ask(page, QUESTION, 1)
    first = page.locator(".message.assistant").nth(0)
    expect(first.locator(".provenance .badge")).to_have_text("base model")

    first.locator("button.correct").click()
    form = first.locator("form.correction")
    form.locator("summary").click()
    expect(form.locator("input[name=prompt]")).to_have_value(QUESTION)
    form.locator("input[name=subject]").fill("france")
    form.locator("input[name=target_new]").fill("rome")
    form.locator("button[name=check]").click()  # the dry run: nothing stored yet
    expect(form.locator(".preview .fact")).to_contain_text(f"{QUESTION} → rome")
    expect(page.locator("#edits li")).to_have_count(0)
    form.locator("button[name=store]").click()
    expect(page.locator("#edits li")).to_have_count(1)
    edit_id = page.locator("#edits li").get_attribute("data-edit-id")
    assert edit_id

    ask(page, QUESTION, 2)
    second = page.locator(".message.assistant").nth(1)
    expect(second.locator(".text")).to_have_text("rome .")
    provenance = second.locator(".provenance")
    assert provenance.get_attribute("data-edit-id") == edit_id
    assert provenance.get_attribute("data-route") == "counterfactual"
    expect(provenance.locator(".badge")).to_have_text("edit · counterfactual")

    if target := os.environ.get("EDITCACHE_PAGE_SCREENSHOT"):  # how the README's picture is made
        page.set_viewport_size({"width": 1200, "height": 640})
        page.screenshot(path=target)

    page.locator("#edits li button.delete").click()  # delete: the edit list is empty again
    expect(page.locator("#edits li")).to_have_count(0)
    page.close()

"""The preview page in real headless Chromium (Debian's ``chromium`` + ``chromium-driver``).

Selenium drives ``/usr/bin/chromedriver`` directly; nothing is downloaded (Selenium Manager is
kept offline). The server is bound to 127.0.0.2, which our rule counts as beyond loopback, so
the whole token flow runs in the browser: ``?token=`` on the first load, then the HttpOnly
cookie for the stream and the API calls.

A screenshot is kept in ``test-artifacts/`` at the repository root.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware.anonymize.stage import AnonymizingStage
from firmware.config.settings import CounterConfig, load
from firmware.detect.centerface import CenterFace
from firmware.preview import PreviewServer
from tests.integration.test_preview_server import (
    CONFIG_TOML,
    TOKEN,
    Feed,
    RecordingHub,
    detector,  # noqa: F401 - module-scoped fixture shared with the server tests
    face_free,
    free_config,
    request,
    second_loopback,
    stage,  # noqa: F401 - module-scoped fixture
)

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

webdriver = pytest.importorskip(
    "selenium.webdriver", reason="pip install selenium to run the browser test"
)
if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    pytest.skip(
        "Chromium is not installed: apt-get install chromium chromium-driver",
        allow_module_level=True,
    )

from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[WebDriver]:
    monkeypatch.setenv(
        "SE_OFFLINE", "true"
    )  # Selenium Manager must never fetch a driver or browser
    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--window-size=1100,1300",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(
        service=Service(str(CHROMEDRIVER), log_output=str(tmp_path / "chromedriver.log")),
        options=options,
    )
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(tmp_path / "chromium-profile", ignore_errors=True)


def wait_for(driver: WebDriver, script: str, timeout: float = 20.0) -> object:
    """Poll a JavaScript expression until it is truthy; return its value."""
    result: object = WebDriverWait(driver, timeout, poll_frequency=0.1).until(
        lambda d: d.execute_script(f"return {script};")
    )
    return result


def screenshot(driver: WebDriver, name: str) -> bytes:
    png: bytes = driver.get_screenshot_as_png()
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / name).write_bytes(png)
    return png


def test_preview_page_end_to_end(
    tmp_path: Path,
    browser: WebDriver,
    stage: AnonymizingStage,  # noqa: F811 - the imported fixture
    detector: CenterFace,  # noqa: F811
) -> None:
    """The installer's path: open the page with the token, see the anonymized live view and the
    counts, drag the line's start point, save; the config file holds the new line and the
    service got it. Meanwhile a request without the token is refused and every frame served
    to the browser is anonymized."""
    config_file = tmp_path / "anoncam.toml"
    config_file.write_text(CONFIG_TOML)
    applied: list[CounterConfig] = []
    hub = RecordingHub(load(config_file).counter, on_counter_change=applied.append, max_fps=10)
    stage.hold.reset()
    feed = Feed(hub, stage)
    feed.start()
    server = PreviewServer(free_config(tmp_path, second_loopback(), TOKEN), hub, config_file)
    server.start()
    try:
        # Without the token: refused, before and while the browser holds a session.
        assert request(server, "GET", "/")[0] == 401
        assert request(server, "GET", "/stream.mjpg")[0] == 401

        browser.get(f"{server.url}?token={TOKEN}")
        assert browser.current_url == server.url, (
            "the token is traded for a cookie and dropped from the URL"
        )
        cookie = browser.get_cookie("anoncam_preview")
        assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Strict"

        # The stream shows frames (through the cookie: <img> cannot send a header).
        wait_for(browser, "document.getElementById('live').naturalWidth > 0")
        assert browser.execute_script("return document.getElementById('live').naturalWidth") == 640
        wait_for(browser, "document.getElementById('live-badge').textContent === 'live'")
        wait_for(browser, "document.querySelectorAll('#counts dt').length >= 4")
        assert "Entries" in browser.find_element(By.ID, "counts").text
        assert "Camera" in browser.find_element(By.ID, "health").text
        first = screenshot(browser, "preview-page.png")
        sent = hub.frames_sent
        time.sleep(1.0)
        second = browser.get_screenshot_as_png()
        assert hub.frames_sent >= sent + 2, "the stream kept delivering frames"
        assert first != second, "the live view changed between two screenshots"

        # Drag the line's start point up by 20 % of the view's height, then save.
        view = browser.find_element(By.ID, "view")
        handle = browser.find_element(By.ID, "handle-a")
        dy = round(view.size["height"] * 0.2)
        ActionChains(browser).click_and_hold(handle).move_by_offset(5, -dy // 2).move_by_offset(
            0, -dy + dy // 2
        ).release().perform()
        wait_for(browser, "!document.getElementById('save').disabled")
        assert "Unsaved" in browser.find_element(By.ID, "save-msg").text
        browser.find_element(By.ID, "save").click()
        wait_for(browser, "document.getElementById('save-msg').textContent.startsWith('Saved')")

        saved = load(config_file).counter
        x1, y1, x2, y2 = saved.line
        assert y1 == pytest.approx(0.3, abs=0.03), saved.line
        assert x1 == pytest.approx(0.2, abs=0.03) and (x2, y2) == (0.8, 0.5)
        assert saved.inside == (0.5, 0.9)
        assert applied == [saved], "the service was told about the new line"
        assert config_file.read_text().startswith("# preview test device\n")
        state = json.loads(
            request(server, "GET", "/api/state", headers={"Authorization": f"Bearer {TOKEN}"})[2]
        )
        assert state["counter"]["line"] == list(saved.line)
        screenshot(browser, "preview-page-saved.png")

        # A phone-sized view of the same page, for the README and for review.
        browser.set_window_size(412, 915)
        time.sleep(0.5)
        screenshot(browser, "preview-page-phone.png")

        assert request(server, "GET", "/api/state")[0] == 401
        assert (
            request(server, "POST", "/api/counter", {"line": [0, 0.1, 1, 0.1], "inside": [0.5, 1]})[
                0
            ]
            == 401
        )
        assert load(config_file).counter == saved
    finally:
        server.stop()
        feed.stop()

    assert len(hub.served) >= 2
    face_free(detector, hub.served)

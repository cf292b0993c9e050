"""``anoncam report`` from real SQLite and real PostgreSQL, the page checked in real headless
Chromium (the preview test's browser fixture); a screenshot is kept in ``test-artifacts/``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from firmware.contract import utc_iso
from firmware.mqtt.subscribe.intake import Window, counts_window
from firmware.mqtt.subscribe.postgres import PostgresStore
from firmware.mqtt.subscribe.sinks import SqliteStore
from tests.integration.test_preview_browser import browser, screenshot, wait_for  # noqa: F401
from tests.integration.test_publish import REPO, window

pytestmark = pytest.mark.integration
DAY = 1_795_000_000 // 86_400 * 86_400  # a UTC midnight


def _day_of_windows() -> list[Window]:
    """Two devices, 15-minute windows over two days; door-2 is off from 10:00 to 13:00 on day 1."""
    out = []
    for device in ("door-1", "door-2"):
        for i in range(2 * 96):
            start = DAY + i * 900
            hour = (start % 86_400) // 3600
            if device == "door-2" and i < 96 and 10 <= hour < 13:
                continue  # camera off: no window at all
            busy = 8 <= hour < 20
            body = window(
                i + 1,
                device=device,
                start=utc_iso(start),
                end=utc_iso(start + 900),
                entries=(hour % 5) if busy else 0,
                exits=(hour % 4) if busy else 0,
                occupancy={"min": 0, "max": 5, "mean": float(hour % 6 if busy else 0), "last": 1},
            )
            out.append(counts_window(json.dumps(body).encode(), body["site"], device))
    return out


def _report(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "firmware", "report", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )


def test_report_sqlite_in_chromium(tmp_path: Path, browser) -> None:  # noqa: F811
    """Charts for hours, days and occupancy load as images in a real browser, the three-hour
    outage is listed as a gap (not drawn as zeros), and the file needs nothing from outside."""
    db = tmp_path / "w.db"
    store = SqliteStore(db)
    store.store(_day_of_windows(), "2026-01-01T00:00:00Z")
    store.close()
    out = tmp_path / "report.html"
    result = _report("--sqlite", str(db), "-o", str(out))
    assert result.returncode == 0, result.stderr
    page = out.read_text()
    assert page.count("data:image/png;base64,") == 3
    assert "http://" not in page and "https://" not in page  # self-contained
    browser.get(out.as_uri())
    loaded = wait_for(
        browser,
        "Array.from(document.images).filter(i => i.complete && i.naturalWidth > 300).length",
    )
    assert loaded == 3
    gaps = browser.execute_script(
        "return Array.from(document.querySelectorAll('#gaps tr')).slice(1).map(r => r.innerText)"
    )
    assert len(gaps) == 1 and "door-2" in gaps[0] and "180 min" in gaps[0]
    assert "2 device(s)" in browser.find_element("id", "summary").text
    assert screenshot(browser, "report.png")[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_postgres_and_errors(postgres_dsn: str, tmp_path: Path) -> None:
    """The same report from PostgreSQL; an empty selection and no source are clear errors."""
    store = PostgresStore(postgres_dsn)
    store.store(_day_of_windows(), "2026-01-01T00:00:00Z")
    store.close()
    out = tmp_path / "pg.html"
    result = _report("--postgres", postgres_dsn, "--site", "store-042", "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert out.read_text().count("data:image/png;base64,") == 3
    empty = _report("--postgres", postgres_dsn, "--site", "nowhere", "-o", str(out))
    assert empty.returncode == 2 and "no windows" in empty.stderr and "fix:" in empty.stderr
    missing = _report("--sqlite", str(tmp_path / "none.db"), "-o", str(out))
    assert missing.returncode == 2 and "no such file" in missing.stderr

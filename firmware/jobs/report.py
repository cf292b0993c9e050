"""``anoncam report``: one self-contained HTML page a store manager reads, from the stored windows.

Reads table ``windows`` (as ``anoncam subscribe --sqlite/--postgres`` writes it) and draws, with
matplotlib (Agg backend, no display), PNG charts embedded as base64 ``data:`` URLs so the file
opens anywhere, offline:

* entries and exits per hour and per day;
* occupancy over the day (mean per window);
* gaps, where no window exists (camera off, outage): drawn as shaded gaps and breaks in the
  lines, never as zeros, and listed per device.

Only aggregate counts go in (P1): the tables hold nothing else.
"""

from __future__ import annotations

import base64
import html
import io
import itertools
import logging
import sqlite3
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from firmware.errors import InputError, OutputError, UsageError
from firmware.fsutil import write_atomic

logger = logging.getLogger(__name__)

_QUERY = (
    "SELECT site, device, window_start, window_end, entries, exits, occupancy_mean, "
    "frames_processed FROM windows{where} ORDER BY window_start"
)


@dataclass(frozen=True)
class Row:
    site: str
    device: str
    start: datetime
    end: datetime
    entries: int
    exits: int
    occupancy: float | None


def _time(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return datetime.strptime(str(value), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def _where(site: str | None, device: str | None, mark: str) -> tuple[str, list[str]]:
    clauses, params = [], []
    if site:
        clauses.append(f"site = {mark}")
        params.append(site)
    if device:
        clauses.append(f"device = {mark}")
        params.append(device)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def _rows(raw: Sequence[Sequence[Any]]) -> list[Row]:
    return [Row(r[0], r[1], _time(r[2]), _time(r[3]), int(r[4]), int(r[5]), r[6]) for r in raw]


def load_sqlite(path: Path, site: str | None, device: str | None) -> list[Row]:
    if not path.is_file():
        raise InputError(
            f"--sqlite {path}: no such file",
            hint="give the file 'anoncam subscribe --sqlite' writes",
        )
    where, params = _where(site, device, "?")
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            raw = conn.execute(_QUERY.format(where=where), params).fetchall()
    except sqlite3.DatabaseError as exc:
        raise InputError(
            f"--sqlite {path}: cannot read table windows ({exc})",
            hint="give a database written by 'anoncam subscribe --sqlite'",
        ) from None
    return _rows(raw)


def load_postgres(dsn: str, site: str | None, device: str | None) -> list[Row]:
    from firmware.mqtt.subscribe.postgres import connect, describe

    where, params = _where(site, device, "%s")
    conn = connect(dsn)
    try:
        raw = conn.execute(_QUERY.format(where=where), params).fetchall()
    except Exception as exc:  # psycopg.Error: imported lazily, so caught broadly and re-raised
        raise InputError(
            f"--postgres {describe(dsn)}: cannot read table windows ({str(exc).strip()})",
            hint="give the database 'anoncam subscribe --postgres' writes",
        ) from None
    finally:
        conn.close()
    return _rows(raw)


# --------------------------------------------------------------------------- aggregation
def _hours(rows: Sequence[Row]) -> tuple[list[datetime], dict[datetime, list[int]], set[datetime]]:
    """Every hour from the first to the last window, per-hour [entries, exits], hours covered."""
    sums: dict[datetime, list[int]] = defaultdict(lambda: [0, 0])
    covered: set[datetime] = set()
    for r in rows:
        hour = r.start.replace(minute=0, second=0, microsecond=0)
        sums[hour][0] += r.entries
        sums[hour][1] += r.exits
        covered.add(hour)
    first, last = min(covered), max(covered)
    hours = []
    h = first
    while h <= last:
        hours.append(h)
        h += timedelta(hours=1)
    return hours, sums, covered


def gaps(rows: Sequence[Row]) -> list[tuple[str, str, datetime, datetime]]:
    """Per device, the stretches between one window's end and the next window's start."""
    by_device: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for r in rows:
        by_device[(r.site, r.device)].append(r)
    out = []
    for (site, device), rs in sorted(by_device.items()):
        rs.sort(key=lambda r: r.start)
        for a, b in itertools.pairwise(rs):
            if b.start > a.end:
                out.append((site, device, a.end, b.start))
    return out


# --------------------------------------------------------------------------- charts
def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _charts(rows: Sequence[Row]) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")  # no display on a server; set before pyplot is imported
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    def num(t: datetime) -> float:  # matplotlib's date axis unit (days), typed as a float
        return float(mdates.date2num(t))  # type: ignore[no-untyped-call]

    charts: dict[str, str] = {}
    hours, sums, covered = _hours(rows)
    nan = float("nan")
    entries = [sums[h][0] if h in covered else nan for h in hours]
    exits = [sums[h][1] if h in covered else nan for h in hours]
    fig, ax = plt.subplots(figsize=(10, 3.2))
    width = timedelta(minutes=25)
    ax.bar(
        [num(h) for h in hours],
        entries,
        width=width / timedelta(days=1),
        label="entries",
        color="#2b7bba",
        align="edge",
    )
    ax.bar(
        [num(h + width) for h in hours],
        exits,
        width=width / timedelta(days=1),
        label="exits",
        color="#e08a2c",
        align="edge",
    )
    for h in hours:
        if h not in covered:  # a gap is shown as a gap: shaded, no bar, never a zero
            ax.axvspan(num(h), num(h + timedelta(hours=1)), color="#bbbbbb", alpha=0.5, lw=0)
    ax.xaxis_date()
    ax.set_title("Entries and exits per hour (UTC); grey: no data (camera off)")
    ax.legend(loc="upper left")
    fig.autofmt_xdate()
    charts["per_hour"] = _png(fig)
    plt.close(fig)

    days: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for r in rows:
        day = r.start.strftime("%Y-%m-%d")
        days[day][0] += r.entries
        days[day][1] += r.exits
    names = sorted(days)
    fig, ax = plt.subplots(figsize=(10, 3))
    xs = range(len(names))
    ax.bar(
        [x - 0.2 for x in xs],
        [days[d][0] for d in names],
        width=0.4,
        label="entries",
        color="#2b7bba",
    )
    ax.bar(
        [x + 0.2 for x in xs],
        [days[d][1] for d in names],
        width=0.4,
        label="exits",
        color="#e08a2c",
    )
    ax.set_xticks(list(xs), names)
    ax.set_title("Entries and exits per day (UTC)")
    ax.legend(loc="upper left")
    charts["per_day"] = _png(fig)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(10, 3.2))
    by_device: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for r in rows:
        by_device[(r.site, r.device)].append(r)
    for (site, device), rs in sorted(by_device.items()):
        xs_t: list[float] = []
        ys: list[float] = []
        for a, b in zip(rs, [*rs[1:], None], strict=True):
            xs_t.append(num(a.start))
            ys.append(nan if a.occupancy is None else float(a.occupancy))
            if b is not None and b.start > a.end:  # break the line across a gap
                xs_t.append(num(a.end))
                ys.append(nan)
        ax.plot(xs_t, ys, label=f"{site}/{device}", lw=1.2)
    for _site, _device, off, on in gaps(rows):
        ax.axvspan(num(off), num(on), color="#bbbbbb", alpha=0.4, lw=0)
    ax.xaxis_date()
    ax.set_title("Occupancy over the day (mean per window); grey: no data")
    ax.set_ylim(bottom=0)
    if len(by_device) <= 12:
        ax.legend(loc="upper left", fontsize="small")
    fig.autofmt_xdate()
    charts["occupancy"] = _png(fig)
    plt.close(fig)
    return charts


# --------------------------------------------------------------------------- the page
def render(rows: Sequence[Row], *, title: str) -> str:
    if not rows:
        raise InputError(
            "no windows to report on (table windows is empty for this site/device)",
            hint="check --site/--device, or let 'anoncam subscribe' store windows first",
        )
    charts = _charts(rows)
    holes = gaps(rows)
    esc = html.escape
    gap_rows = "".join(
        f"<tr><td>{esc(s)}/{esc(d)}</td><td>{a:%Y-%m-%d %H:%M}</td><td>{b:%Y-%m-%d %H:%M}</td>"
        f"<td>{(b - a).total_seconds() / 60:.0f} min</td></tr>"
        for s, d, a, b in holes
    )
    devices = sorted({(r.site, r.device) for r in rows})
    first, last = min(r.start for r in rows), max(r.end for r in rows)
    figures = (
        f"<p id='summary'>{len(rows)} windows from {len(devices)} device(s), "
        f"{first:%Y-%m-%d %H:%M} to {last:%Y-%m-%d %H:%M} UTC: "
        f"<b>{sum(r.entries for r in rows)}</b> entries, <b>{sum(r.exits for r in rows)}</b> "
        f"exits, {len(holes)} gap(s).</p>"
    )
    imgs = "".join(
        f"<figure><img id='chart-{k}' alt='{esc(k)}' src='data:image/png;base64,{v}'></figure>"
        for k, v in charts.items()
    )
    gap_table = (
        "<table id='gaps'><tr><th>device</th><th>from</th><th>to</th><th>length</th></tr>"
        f"{gap_rows}</table>"
        if holes
        else "<p id='gaps'>No gaps: every device reported every window.</p>"
    )
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{esc(title)}</title><style>body{{font-family:sans-serif;max-width:1050px;"
        "margin:1em auto;color:#222}img{max-width:100%}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 8px}</style></head><body>"
        f"<h1>{esc(title)}</h1>{figures}{imgs}<h2>Gaps (no data)</h2>{gap_table}"
        "<p><small>Anonymous counts only (anoncam): no image or per-person data exists here."
        "</small></p></body></html>"
    )


def write_report(
    out: Path,
    *,
    sqlite: Path | None = None,
    postgres: str | None = None,
    site: str | None = None,
    device: str | None = None,
) -> int:
    """Write the report to ``out``; returns the number of windows in it."""
    if (sqlite is None) == (postgres is None):
        raise UsageError("give exactly one of --sqlite FILE or --postgres DSN")
    rows = (
        load_sqlite(sqlite, site, device) if sqlite else load_postgres(str(postgres), site, device)
    )
    scope = "/".join(x for x in (site, device) if x) or "all sites"
    page = render(rows, title=f"Foot traffic: {scope}")
    try:
        write_atomic(out, page.encode("utf-8"))
    except OSError as exc:
        raise OutputError(
            f"-o {out}: cannot write: {exc.strerror}", hint="choose a writable path"
        ) from None
    return len(rows)

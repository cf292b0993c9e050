"""Rendering a diagnosis: a table for people, JSON for machines.

The table has one line per check (status, check, detail) and, under every line that is not OK,
the fix. It is plain text (no colour codes) so it reads the same over SSH, in a ticket and in a
support bundle. The JSON follows ``firmware/schemas/diagnose.schema.json``.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from firmware.diagnostics.base import Status
from firmware.diagnostics.suite import Report


def render_table(report: Report) -> str:
    host = report.host
    what = host.get("model") or host.get("hardware") or "unknown machine"
    config = str(report.config_path) if report.config_path else "none found, defaults in use"
    lines = [
        f"anoncam {report.version} diagnose on {host.get('hostname') or '?'} ({what}), "
        f"{report.generated}",
        f"config: {config}",
        "",
    ]
    width = max([len("CHECK")] + [len(c.name) for c in report.checks])
    lines.append(f"{'STATUS':<6}  {'CHECK':<{width}}  DETAIL")
    for check in report.checks:
        lines.append(f"{check.status!s:<6}  {check.name:<{width}}  {check.detail}")
        if check.status != Status.OK and check.hint:
            lines.append(f"{'':<6}  {'':<{width}}  fix: {check.hint}")
    counts = report.counts()
    lines.append("")
    lines.append(
        ", ".join(f"{n} {s}" for s, n in counts.items())
        + (": FAILED" if report.failed else ": no failures")
    )
    return "\n".join(lines) + "\n"


def render_json(report: Report) -> str:
    return json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n"


def load_schema() -> dict[str, Any]:
    """The JSON Schema of ``anoncam diagnose --json`` (shipped in the package)."""
    schemas = resources.files("firmware").joinpath("schemas")
    text = schemas.joinpath("diagnose.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema

"""A simulated fleet end to end: devices -> one Mosquitto -> shared subscribers -> PostgreSQL.

Each simulated device is the device's real publishing half: its own :class:`Outbox` (SQLite on
disk, durable commits) and :class:`Publisher` (paho, QoS 1, drained in order, rows deleted only
after PUBACK), with the per-device user, password and ACL that ``anoncam provision broker``
writes for an inventory of that many devices. Windows close on wall-clock boundaries, as on a
camera, so the whole fleet publishes in one burst per window period (the hard case). Devices
run in ``--processes`` worker processes; ``--subscribers`` ``anoncam subscribe --share`` processes
store into one real PostgreSQL.

Reports windows per second, end-to-end latency (window closed in the outbox -> row committed,
from ``stored_at``) p50/p99, and checks that the table holds exactly the windows published: none
lost, none duplicated, no conflict. ``--faults`` restarts the broker, SIGKILLs and restarts one
subscriber and restarts the database, spread over the run. Exit 0 when nothing was lost or
duplicated, 1 otherwise.

    scripts/fleet-sim --devices 1000 --window 10 --duration 300 --subscribers 3 --faults all
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
GROUP = "fleet"
SUB_USER = "fleet-bi"


def device_ids(n: int) -> list[tuple[str, str]]:
    """``n`` devices, ten per site."""
    return [(f"site-{i // 10:04d}", f"cam-{i % 10}") for i in range(n)]


# --------------------------------------------------------------------------- device workers
def run_worker(spec: dict[str, Any]) -> None:
    """One worker process: its share of the devices, until ``spec['until']`` (epoch seconds)."""
    from firmware.config.settings import MqttConfig
    from firmware.mqtt.publish import Publisher
    from firmware.outbox import Outbox
    from tests.integration.test_publish import health, window

    window_s: int = spec["window"]
    publishers: list[tuple[str, str, Outbox, Publisher]] = []
    for site, device, password_file in spec["devices"]:
        outbox = Outbox(Path(spec["state"]) / f"{site}-{device}.sqlite3")
        config = MqttConfig(
            host="127.0.0.1",
            port=spec["port"],
            username=spec["users"][device_key(site, device)],
            password_file=password_file,
            keepalive_s=60,
            keep_until_subscribed=spec["keep_until_subscribed"],
        )
        pub = Publisher(
            config,
            site=site,
            device=device,
            outbox=outbox,
            health=health,
            version="fleet-sim",
            reconnect_min_s=0.5,
            reconnect_max_s=2.0,
        )
        publishers.append((site, device, outbox, pub))
    # A fleet does not boot in one instant: start the devices in groups, each group connected
    # before the next, or a thousand simultaneous logins make each other miss the CONNACK
    # timeout and retry in a storm (seen at 1000 devices here).
    for i in range(0, len(publishers), 25):
        group = publishers[i : i + 25]
        for _, _, _, pub in group:
            pub.start()
        for _, _, _, pub in group:
            pub.wait_connected(60)
    # Latency counts from a window's close; windows closed before the fleet has connected would
    # measure start-up (1000 logins), so the first window closes after every device is online.
    for _, _, _, pub in publishers:
        pub.wait_connected(60)
    closed: list[tuple[str, str, int, float]] = []
    boundary = (int(time.time()) // window_s + 1) * window_s
    until = boundary + spec["duration"] - window_s
    while boundary <= until:
        time.sleep(max(0.0, boundary - time.time()))
        start, end = boundary - window_s, boundary
        for site, device, outbox, pub in publishers:

            def build(
                seq: int, site: str = site, device: str = device, start: int = start, end: int = end
            ) -> dict[str, Any]:
                from firmware.contract import utc_iso

                return window(seq, site=site, device=device, start=utc_iso(start), end=utc_iso(end))

            seq = outbox.add_window(build)
            closed.append((site, device, seq, time.time()))
            pub.wake()
        boundary += window_s
    for _, _, outbox, pub in publishers:
        pub.stop(drain_timeout_s=60)
        outbox.close()
    Path(spec["result"]).write_text(json.dumps(closed))


def device_key(site: str, device: str) -> str:
    return f"{site}/{device}"


# --------------------------------------------------------------------------- the run
@dataclass
class Subscriber:
    name: str
    args: list[str]
    proc: subprocess.Popen[bytes] | None = None

    def start(self, log: Path) -> None:
        with log.open("ab") as f:
            self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=f, cwd=REPO)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


FAULT_LEAD_S = 0.5
"""A fault begins this long before a window boundary, so the fleet's next burst meets it."""
FAULT_SPAN_WINDOWS = 3
"""Windows closed within this many window lengths after a fault count as that fault's."""


def phase_latencies(
    latency: dict[tuple[str, str, int], float],
    closed: dict[tuple[str, str, int], float],
    fault_at: list[tuple[str, float]],
    *,
    span_s: float,
) -> list[dict[str, Any]]:
    """Latency figures per phase: each fault's windows (closed from the fault's start to
    ``span_s`` after it) and the steady state (every other window), so a fault's cost shows
    beside the figures before and after it instead of vanishing into a run-wide p99."""
    groups: dict[str, list[float]] = {"steady (no fault within span)": []}
    for name, _ in fault_at:
        groups[name] = []
    for key, value in latency.items():
        at = closed[key]
        hit = next((name for name, t in fault_at if t <= at < t + span_s), None)
        groups[hit or "steady (no fault within span)"].append(value)
    return [
        {
            "phase": name,
            "windows": len(values),
            "p50_s": round(_percentile(values, 0.5), 3),
            "p99_s": round(_percentile(values, 0.99), 3),
            "max_s": round(max(values, default=float("nan")), 3),
        }
        for name, values in groups.items()
    ]


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="fleet-sim", description=__doc__.split("\n\n")[0])
    p.add_argument("--devices", type=int, default=1000)
    p.add_argument("--window", type=int, default=10, help="window length, seconds")
    p.add_argument("--duration", type=int, default=300, help="seconds of publishing")
    p.add_argument("--subscribers", type=int, default=3)
    p.add_argument(
        "--processes",
        type=int,
        default=8,
        help="device worker processes (default 8: each simulated device is two Python threads, "
        "and 1000 devices in 4 processes starved each other's logins into a reconnect storm)",
    )
    p.add_argument(
        "--faults",
        default="",
        help="comma-separated faults spread over the run: broker (restart), subscriber "
        "(SIGKILL + restart), db (PostgreSQL restart); 'all' for the three",
    )
    p.add_argument(
        "--no-keep-until-subscribed",
        dest="keep_until_subscribed",
        action="store_false",
        help="devices let the broker drop a window nobody subscribes to (mqtt."
        "keep_until_subscribed = false), to show what a broker restart costs without it",
    )
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    p.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker is not None:
        import logging

        # timestamped, so a kept work dir shows when each device lost, regained and sent
        logging.basicConfig(format="%(created).3f %(message)s", level=logging.INFO)
        run_worker(json.loads(args.worker.read_text()))
        return 0
    if min(args.devices, args.window, args.duration, args.subscribers, args.processes) < 1:
        p.error("every number must be at least 1")

    import psycopg

    from provisioning import broker as provision
    from provisioning import mosquitto
    from provisioning.inventory import loader as inventory
    from tests.support.mosquitto import make_broker
    from tests.support.postgres import destroy, make_postgres
    from tests.unit.test_provision_support import write_fleet

    work = Path(tempfile.mkdtemp(prefix="anoncam-fleet-"))
    ids = device_ids(args.devices)
    t_setup = time.monotonic()
    inv_path = write_fleet(work / "inventory", devices=ids, subscribers=(SUB_USER,))
    inv = inventory.load(inv_path)
    provision.write_broker(inv, work / "broker-files")
    secrets = work / "secrets"
    secrets.mkdir()
    users: dict[str, tuple[str, Path]] = {}
    for acc in mosquitto.accounts(inv):
        pw = secrets / acc.username
        pw.write_text(provision.account_password(inv, acc).value + "\n")
        key = device_key(acc.site, acc.device) if acc.kind == "device" else acc.username
        users[key] = (acc.username, pw)
    files = work / "broker-files"
    broker = make_broker(
        work / "broker",
        f"password_file {files / 'passwd'}\nacl_file {files / 'acl'}\n"
        # A fleet needs the broker to keep what it has accepted across a restart, and more
        # than the default 1000 queued messages per sleeping subscriber session.
        f"persistence true\npersistence_location {work / 'broker'}/\n"
        "autosave_interval 5\nmax_queued_messages 0\nmax_inflight_messages 100\n",
        anonymous=False,
    )
    broker.start()
    pg = make_postgres()
    dsn = pg.create_database("fleet")
    sub_user, sub_pw = users[SUB_USER]
    subs = [
        Subscriber(
            f"sub-{i}",
            [
                sys.executable,
                "-m",
                "firmware",
                "subscribe",
                "--mqtt-host",
                "127.0.0.1",
                "--mqtt-port",
                str(broker.port),
                "--username",
                sub_user,
                "--password-file",
                str(sub_pw),
                "--share",
                GROUP,
                "--client-id",
                f"fleet-sub-{i}",
                "--postgres",
                dsn,
                "--json",
            ],
        )
        for i in range(args.subscribers)
    ]
    sub_log = work / "subscribers.log"
    for s in subs:
        s.start(sub_log)
    time.sleep(2)  # the subscribers' sessions exist before the first window
    setup_s = time.monotonic() - t_setup

    workers: list[tuple[subprocess.Popen[bytes], Path]] = []
    state = work / "outboxes"
    state.mkdir()
    for w in range(args.processes):
        mine = ids[w :: args.processes]
        spec = {
            "devices": [(s, d, str(users[device_key(s, d)][1])) for s, d in mine],
            "users": {device_key(s, d): users[device_key(s, d)][0] for s, d in mine},
            "port": broker.port,
            "window": args.window,
            "duration": args.duration,
            "keep_until_subscribed": args.keep_until_subscribed,
            "state": str(state),
            "result": str(work / f"closed-{w}.json"),
        }
        spec_path = work / f"worker-{w}.json"
        spec_path.write_text(json.dumps(spec))
        cmd = [sys.executable, "-m", "tests.benchmarks.fleet_sim", "--worker", str(spec_path)]
        log = work / f"worker-{w}.log"
        with log.open("ab") as f:
            workers.append((subprocess.Popen(cmd, cwd=REPO, stderr=f, stdout=f), spec_path))

    faults: list[str] = []
    fault_at: list[tuple[str, float]] = []  # (fault, epoch seconds it began)
    wanted = (
        {"broker", "subscriber", "db"}
        if args.faults == "all"
        else set(filter(None, args.faults.split(",")))
    )
    if wanted - {"broker", "subscriber", "db"}:
        p.error(f"--faults: unknown {', '.join(sorted(wanted - {'broker', 'subscriber', 'db'}))}")
    if wanted:

        def before_burst() -> float:
            # The whole fleet publishes on each window boundary: strike just before one, so a
            # burst lands in the outage (a fault between bursts would hit nothing).
            now = time.time()
            boundary = (int(now) // args.window + 1) * args.window
            if boundary - now < FAULT_LEAD_S:
                boundary += args.window
            time.sleep(boundary - FAULT_LEAD_S - now)
            return time.time()

        def inject() -> None:
            # The fault clock starts with the first stored window (after the fleet connected).
            while True:
                with psycopg.connect(dsn) as conn:
                    if conn.execute("SELECT count(*) FROM windows").fetchone()[0]:
                        break
                time.sleep(0.5)
            begun = time.time()
            step = args.duration / 4
            time.sleep(step)
            if "broker" in wanted:
                at = before_burst()
                broker.stop()
                time.sleep(1)
                broker.start()
                fault_at.append(("broker restart", at))
                faults.append(f"broker restarted at {at - begun:.0f} s")
            time.sleep(max(0.0, begun + 2 * step - time.time()))
            if "subscriber" in wanted:
                at = before_burst()
                subs[0].kill()
                time.sleep(1)
                subs[0].start(sub_log)
                fault_at.append((f"subscriber {subs[0].name} SIGKILL", at))
                faults.append(
                    f"subscriber {subs[0].name} SIGKILLed + restarted at {at - begun:.0f} s"
                )
            time.sleep(max(0.0, begun + 3 * step - time.time()))
            if "db" in wanted:
                at = before_burst()
                pg.restart()
                fault_at.append(("PostgreSQL restart", at))
                faults.append(f"PostgreSQL restarted at {at - begun:.0f} s")

        threading.Thread(target=inject, daemon=True).start()

    for proc, _ in workers:
        proc.wait()
    closed: dict[tuple[str, str, int], float] = {}
    for w in range(args.processes):
        path = work / f"closed-{w}.json"
        if not path.exists():
            print(f"fleet-sim: worker {w} failed; see {work}/worker-{w}.log", file=sys.stderr)
            return 1
        for site, device, seq, at in json.loads(path.read_text()):
            closed[(site, device, seq)] = at
    # Everything published is stored eventually: wait for the table to hold all of it.
    deadline = time.monotonic() + 60
    rows: list[tuple[str, str, int, float]] = []
    while time.monotonic() < deadline:
        with psycopg.connect(dsn) as conn:
            rows = conn.execute(
                "SELECT site, device, seq, extract(epoch FROM stored_at)::float8 FROM windows"
            ).fetchall()
            conflicts = conn.execute("SELECT count(*) FROM window_conflicts").fetchone()[0]
        if len(rows) >= len(closed):
            break
        time.sleep(1)
    time.sleep(2)
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT site, device, seq, extract(epoch FROM stored_at)::float8 FROM windows"
        ).fetchall()
        conflicts = conn.execute("SELECT count(*) FROM window_conflicts").fetchone()[0]
    for s in subs:
        s.stop()
    broker.stop()
    destroy(pg)

    stored = {(r[0], r[1], r[2]): r[3] for r in rows}
    lost = sorted(set(closed) - set(stored))
    extra = sorted(set(stored) - set(closed))
    duplicated = len(rows) - len(stored)  # the primary key makes this 0 unless it is broken
    latencies = [stored[k] - closed[k] for k in closed if k in stored]
    phases = phase_latencies(
        {k: stored[k] - closed[k] for k in closed if k in stored},
        closed,
        fault_at,
        span_s=FAULT_SPAN_WINDOWS * args.window,
    )
    figures = {
        "devices": args.devices,
        "window_s": args.window,
        "duration_s": args.duration,
        "subscribers": args.subscribers,
        "device_processes": args.processes,
        "published": len(closed),
        "stored": len(stored),
        "lost": len(lost),
        "duplicated": duplicated,
        "unexpected": len(extra),
        "conflicts": conflicts,
        "windows_per_s": round(len(closed) / args.duration, 1),
        "latency_p50_s": round(_percentile(latencies, 0.5), 3),
        "latency_p99_s": round(_percentile(latencies, 0.99), 3),
        "latency_max_s": round(max(latencies, default=float("nan")), 3),
        "faults": faults,
        "phases": phases,
        "setup_s": round(setup_s, 1),
        "load_avg": os.getloadavg(),
    }
    print(
        f"fleet-sim: {args.devices} devices, {args.window} s windows, {args.duration} s, "
        f"{args.subscribers} shared subscriber(s) into PostgreSQL\n"
        f"  published {figures['published']} windows ({figures['windows_per_s']}/s), stored "
        f"{figures['stored']}: lost {figures['lost']}, duplicated {duplicated}, unexpected "
        f"{len(extra)}, conflicts {conflicts}\n"
        f"  end-to-end latency (closed -> committed): p50 {figures['latency_p50_s']} s, "
        f"p99 {figures['latency_p99_s']} s, max {figures['latency_max_s']} s\n"
        f"  faults: {', '.join(faults) if faults else 'none'}\n"
        + "".join(
            f"    {ph['phase']}: {ph['windows']} windows, p50 {ph['p50_s']} s, "
            f"p99 {ph['p99_s']} s, max {ph['max_s']} s\n"
            for ph in phases
            if faults
        )
        + f"  load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}\n"
        f"  work dir: {work}"
    )
    if lost:
        print(f"  first lost: {lost[:5]}")
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2))
    ok = not lost and not extra and duplicated == 0 and conflicts == 0
    if ok:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Shared helpers for the tests of ``anoncam run``: rendered scenes with known crossings, the
command as a subprocess, a counts listener (optionally with a durable broker session), and a
look into the outbox a run left behind.

Scenes are rendered once per test session and spec (``rendered``), into pytest's session temp
dir, so the test files that use the same scene share one video.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from firmware import contract
from firmware.mqtt.subscribe.ledger import WindowLedger
from firmware.outbox import Outbox
from firmware.sources.synthetic.people import Crossing, Walk
from firmware.sources.synthetic.scene import SyntheticScene, write_video
from tests.support.mosquitto import Broker, make_broker

REPO = Path(__file__).resolve().parents[2]
SITE, DEVICE = "store-042", "door-1"
OUTBOX_NAME = "outbox.sqlite3"


# --------------------------------------------------------------------------- scenes
@dataclass(frozen=True)
class SceneSpec:
    """A synthetic scene small enough for a 2-core CI machine (640x360 at 10 fps). ``bodies``:
    whole walking bodies (the default, as ``anoncam run`` counts person tracks); False for the
    head-and-torso scene of large faces."""

    duration_s: float = 30.0
    seed: int = 0
    max_in_view: int = 2
    mean_gap_s: float = 1.0
    walks: tuple[Walk, ...] | None = None
    width: int = 640
    height: int = 360
    fps: float = 10.0
    bodies: bool = True

    def build(self) -> SyntheticScene:
        return SyntheticScene(
            self.width,
            self.height,
            fps=self.fps,
            duration_s=self.duration_s,
            people=self.walks,
            seed=self.seed,
            max_in_view=self.max_in_view,
            mean_gap_s=self.mean_gap_s,
            bodies=self.bodies,
        )


@dataclass(frozen=True)
class Rendered:
    """A scene written to an H.264 file, with its ground truth."""

    spec: SceneSpec
    scene: SyntheticScene
    path: Path

    @property
    def frames(self) -> int:
        return self.scene.frame_count

    @property
    def crossings(self) -> tuple[Crossing, ...]:
        return self.scene.crossings

    @property
    def true_entries(self) -> int:
        return sum(c.direction == "entry" for c in self.crossings)

    @property
    def true_exits(self) -> int:
        return sum(c.direction == "exit" for c in self.crossings)


BUSY_DOOR = SceneSpec(duration_s=30.0, seed=0, max_in_view=3, mean_gap_s=0.6)
"""30 s of a door with up to three people in view: 4 entries and 4 exits, all counted by the
real pipeline (tests that need the counts to match the truth use it)."""

SHORT_CLIP = SceneSpec(duration_s=3.0, seed=1, max_in_view=1, mean_gap_s=1.0)
"""3 s, for a second run that only has to start, connect and drain."""

_RENDERED: dict[tuple[Path, SceneSpec], Rendered] = {}


def rendered(factory: pytest.TempPathFactory, spec: SceneSpec) -> Rendered:
    """The scene of ``spec`` as a video file, rendered at most once per test session."""
    key = (factory.getbasetemp(), spec)
    found = _RENDERED.get(key)
    if found is None:
        scene = spec.build()
        path = factory.mktemp("scene") / "scene.mp4"
        write_video(scene, path)
        found = _RENDERED[key] = Rendered(spec, scene, path)
    return found


# --------------------------------------------------------------------------- the command
def run_args(
    source: Path | str,
    broker_port: int,
    state_dir: Path,
    *,
    window: int = 10,
    drain_timeout: float = 15.0,
    extra: Sequence[str] = (),
) -> list[str]:
    """Arguments of ``anoncam run`` for a test (site and device fixed, loopback broker)."""
    return [
        "run",
        "--source",
        str(source),
        "--site",
        SITE,
        "--device",
        DEVICE,
        "--mqtt-host",
        "127.0.0.1",
        "--mqtt-port",
        str(broker_port),
        "--window",
        str(window),
        "--state-dir",
        str(state_dir),
        "--drain-timeout",
        f"{drain_timeout:g}",
        *extra,
    ]


class RunProcess:
    """``python -m firmware ARGS`` as a subprocess; its stderr (the log) is collected in memory
    by a thread, so the test can wait for a log line and nothing is written to disk."""

    def __init__(
        self,
        args: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        prefix: Sequence[str] = (),
    ) -> None:
        self.argv = [*prefix, sys.executable, "-m", "firmware", *args]
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=cwd or REPO,
        )
        self._lines: list[str] = []
        self._out: list[str] = []
        self._cond = threading.Condition()
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stderr, self._lines), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stdout, self._out), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: Any, into: list[str]) -> None:
        for line in stream:
            with self._cond:
                into.append(line)
                self._cond.notify_all()

    @property
    def stderr(self) -> str:
        with self._cond:
            return "".join(self._lines)

    @property
    def stdout(self) -> str:
        with self._cond:
            return "".join(self._out)

    def wait_log(self, text: str, timeout: float) -> bool:
        """Wait until a stderr line contains ``text`` (False on timeout or exit)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not any(text in line for line in self._lines):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc.poll() is not None and not self._alive()):
                    return False
                self._cond.wait(min(remaining, 0.2))
        return True

    def _alive(self) -> bool:
        return any(r.is_alive() for r in self._readers)

    def send(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        """The exit code; kills the process (and fails) if it does not end in time."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            self._join()
            raise AssertionError(
                f"{' '.join(self.argv)} did not end within {timeout} s; log:\n{self.stderr}"
            ) from None
        self._join()
        return code

    def _join(self) -> None:
        for reader in self._readers:
            reader.join(5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def stop(self) -> None:
        """Make sure the process is gone (cleanup after a failed test)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self._join()


def anoncam(args: Sequence[str], *, timeout: float = 120.0, **kw: Any) -> tuple[int, str]:
    """Run ``python -m firmware ARGS`` to its end: ``(exit code, stderr)``."""
    proc = RunProcess(args, **kw)
    try:
        return proc.wait(timeout), proc.stderr
    finally:
        proc.stop()


# --------------------------------------------------------------------------- outbox
@dataclass(frozen=True)
class OutboxState:
    depth: int
    next_seq: int
    payloads: tuple[dict[str, Any], ...]  # unsent windows, oldest first


def outbox_state(state_dir: Path) -> OutboxState:
    """What a run left in its outbox (open it only when no run uses it)."""
    path = state_dir / OUTBOX_NAME
    assert path.is_file(), f"no outbox at {path}"
    with Outbox(path) as box:
        stats = box.stats()
        rows = box.pending(limit=100_000)
    return OutboxState(stats.depth, stats.next_seq, tuple(json.loads(r.payload) for r in rows))


# --------------------------------------------------------------------------- brokers
def persistent_broker(directory: Path, port: int | None = None) -> Broker:
    """A Mosquitto that keeps client sessions across a restart, even after SIGKILL (it saves
    its state every second), so a durable subscriber misses nothing published while it was
    reconnecting: what a real deployment's broker and BI consumer do."""
    directory.mkdir(parents=True, exist_ok=True)
    return make_broker(
        directory,
        f"persistence true\npersistence_location {directory}/\nautosave_interval 1\n",
        port=port,
    )


def wait_session_saved(directory: Path, client_id: str, timeout: float = 10.0) -> None:
    """Wait until the broker of :func:`persistent_broker` has written the session of
    ``client_id`` to its database (so a SIGKILL from now on cannot lose it)."""
    db = directory / "mosquitto.db"
    deadline = time.monotonic() + timeout
    while not (db.is_file() and client_id.encode() in db.read_bytes()):
        assert time.monotonic() < deadline, f"{db} never held the session of {client_id}"
        time.sleep(0.1)


# --------------------------------------------------------------------------- listener
@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    retain: bool

    @property
    def kind(self) -> str:
        return self.topic.rsplit("/", 1)[-1]

    def json(self) -> Any:
        return json.loads(self.payload)


class Listener:
    """An independent paho subscriber that records every message on ``topics``.

    Count windows are validated against the schema (an invalid one fails :meth:`windows`) and
    fed to a :class:`~firmware.mqtt.subscribe.ledger.WindowLedger`, as a consumer de-duplicates
    them.

    ``durable``: an MQTT 3.1.1 persistent session (clean_session False, fixed client id) that
    reconnects on its own: with :func:`persistent_broker`, windows published while it was away
    (broker restart) are queued for it by the broker.
    """

    def __init__(
        self,
        broker: Broker,
        topics: Sequence[str] = ("anoncam/#",),
        *,
        durable: bool = False,
        client_id: str = "",
        connect: bool = True,
    ) -> None:
        self.broker = broker
        self.messages: list[Message] = []
        self.ledger = WindowLedger()
        self.invalid: list[str] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        if durable:
            assert client_id, "a durable session needs a fixed client id"
            self.client = mqtt.Client(
                CallbackAPIVersion.VERSION2,
                client_id=client_id,
                protocol=mqtt.MQTTv311,
                clean_session=False,
            )
        else:
            self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.reconnect_delay_set(1, 2)  # a durable session loses nothing meanwhile
        subs = [(t, 1) for t in topics]

        def on_connect(c: mqtt.Client, u: Any, f: Any, rc: Any, p: Any) -> None:
            if not rc.is_failure:
                c.subscribe(subs)

        def on_subscribe(c: mqtt.Client, u: Any, mid: int, rcs: Any, p: Any) -> None:
            self._subscribed.set()

        self.client.on_connect = on_connect
        self.client.on_subscribe = on_subscribe
        self.client.on_message = self._on_message
        if connect:
            self.start()

    def start(self) -> None:
        self._subscribed.clear()
        self.client.connect(self.broker.host, self.broker.port)
        self.client.loop_start()
        assert self._subscribed.wait(10), "test listener got no SUBACK"

    def _on_message(self, c: mqtt.Client, u: Any, m: mqtt.MQTTMessage) -> None:
        msg = Message(m.topic, bytes(m.payload), bool(m.retain))
        with self._cond:
            self.messages.append(msg)
            if msg.kind == "counts":
                try:
                    body = msg.json()
                    contract.validate("counts", body)
                except ValueError as exc:
                    self.invalid.append(f"{m.topic}: {exc}")
                else:
                    self.ledger.observe(
                        body["site"], body["device"], int(body["seq"]), int(body.get("merged", 1))
                    )
            self._cond.notify_all()

    def on(self, kind: str) -> list[Message]:
        with self._cond:
            return [m for m in self.messages if m.kind == kind]

    def windows(self) -> list[dict[str, Any]]:
        """Every counts message received, duplicates included, in arrival order."""
        assert not self.invalid, self.invalid
        return [m.json() for m in self.on("counts")]

    def distinct(self) -> dict[int, dict[str, Any]]:
        """Windows by seq, each once (a repeat must be identical: QoS 1 resends, nothing else)."""
        out: dict[int, dict[str, Any]] = {}
        for w in self.windows():
            seq = int(w["seq"])
            if seq in out:
                assert out[seq] == w, f"seq {seq} arrived twice with different contents"
            out[seq] = w
        return out

    def wait(self, predicate: Callable[[Listener], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.5))
        return True

    def wait_seqs(self, n: int, timeout: float) -> bool:
        """Wait until windows 1..n have all arrived."""
        want = set(range(1, n + 1))
        return self.wait(lambda r: want <= set(r.distinct()), timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def assert_contiguous(windows: dict[int, dict[str, Any]], last: int) -> None:
    """Seqs 1..last, each present once, no gap and nothing beyond."""
    assert sorted(windows) == list(range(1, last + 1)), sorted(windows)


def sum_of(windows: dict[int, dict[str, Any]], key: str) -> int:
    return sum(int(w[key]) for w in windows.values())


def processed(windows: dict[int, dict[str, Any]]) -> int:
    return sum(int(w["frames"]["processed"]) for w in windows.values())


def child_env(**extra: str) -> dict[str, str]:
    """The test's environment for a child process, plus ``extra``."""
    env = dict(os.environ)
    env.update(extra)
    return env

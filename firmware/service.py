"""The composition root: config in, a running counting camera out.

``Service`` wires the real collaborators (source, detector, anonymizer, tracker, counter,
window aggregator, outbox, publisher, optional preview), installs signal handlers, talks to
systemd, runs the frame loop, and on the way out flushes the last partial window and drains the
outbox. Nothing else in the package builds these objects from config.

Ending: a file source ends at its last frame; SIGTERM or SIGINT ends any source. Either way the
last partial window is closed and written to the outbox, and the publisher gets up to
``drain_timeout_s`` to have every window acknowledged. Windows not acknowledged stay in the
outbox (nothing is lost) and the run ends with exit 1 and a message saying so.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from firmware import __version__
from firmware.config import Config, CounterConfig
from firmware.errors import BrokerError, StorageError
from firmware.pipeline import LoopStats, Sink, WallClock

if TYPE_CHECKING:
    from firmware.publish import Publisher

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunResult:
    frames: int
    windows: int
    drained: bool
    undelivered: int
    seconds: float


class _SwappableCounter:
    """Lets the frame loop switch to a new counting line between two frames."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def swap(self, inner: Any) -> None:
        self.inner = inner

    def update(self, u: Any, t_ns: int) -> Any:
        return self.inner.update(u, t_ns)


class Service:
    """One run of the camera service. ``on_window`` is called with each closed window's seq
    (the demo uses it to show progress); ``extra_sinks`` receive every anonymized frame."""

    def __init__(
        self,
        config: Config,
        *,
        config_path: Path | None = None,
        drain_timeout_s: float = 30.0,
        connect_timeout_s: float = 5.0,
        epoch_ns: int | None = None,
        extra_sinks: tuple[Sink, ...] = (),
        on_progress: Callable[[LoopStats], None] | None = None,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.drain_timeout_s = drain_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.epoch_ns = epoch_ns
        self.extra_sinks = extra_sinks
        self.on_progress = on_progress
        self.stop_event = threading.Event()
        self.stats = LoopStats()
        self._camera_state = "starting"
        self._pending_counter: CounterConfig | None = None
        self._counter_lock = threading.Lock()

    # ------------------------------------------------------------------ signals
    def _install_signals(self) -> dict[int, Any]:
        previous: dict[int, Any] = {}
        if threading.current_thread() is not threading.main_thread():
            return previous

        def handler(signum: int, _frame: FrameType | None) -> None:
            logger.info(
                "%s received: finishing the current window and draining the outbox",
                signal.Signals(signum).name,
            )
            self.stop_event.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, handler)
        return previous

    @staticmethod
    def _restore_signals(previous: dict[int, Any]) -> None:
        for sig, h in previous.items():
            signal.signal(sig, h)

    # ------------------------------------------------------------------ health
    def _health(self) -> dict[str, Any]:
        figures: dict[str, Any] = {
            **self.stats.as_health(),
            "camera": self._camera_state,
            "cpu_temp_c": None,
            "throttling": None,
        }
        try:
            from firmware import hwstatus
            from firmware.diagnostics.base import Context, Host

            host = Host()
            figures.update(hwstatus.read(host, Context(config=self.config, host=host)))
        except (OSError, ValueError) as exc:
            logger.debug("hardware figures unavailable: %s", exc)
        return figures

    # ------------------------------------------------------------------ preview
    def _counter_changed(self, counter: CounterConfig) -> None:
        """Called from the preview server's thread; applied by the frame loop between frames."""
        with self._counter_lock:
            self._pending_counter = counter
        logger.info("counting line changed from the preview page; applied from the next frame")

    # ------------------------------------------------------------------ broker
    def _first_connection(self, publisher: Publisher) -> bool:
        """Start the publisher and wait for its first attempt to settle: connected (True),
        refused for good (BrokerError: a wrong password must stop the start), or not reachable
        (False, at once: counting must not wait for a broker that is down, the outbox keeps the
        windows). At most ``connect_timeout_s`` for a broker that does not answer at all."""
        connected = publisher.start()
        deadline = time.monotonic() + self.connect_timeout_s
        while not connected and publisher.failed_attempts == 0:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            connected = publisher.wait_connected(min(remaining, 0.1))
        # The attempt that failed may have been a refusal: wait_connected raises it.
        return connected or publisher.wait_connected(0)

    # ------------------------------------------------------------------ run
    def run(self) -> RunResult:
        # onnxruntime's telemetry is already off: importing firmware opted this process out.
        from firmware.anonymizing import stage_from_config
        from firmware.count import LineCounter
        from firmware.lookahead import Lookahead, delay_frames
        from firmware.outbox import Outbox
        from firmware.pipeline import run as run_loop
        from firmware.publish import Publisher
        from firmware.sdnotify import Notifier
        from firmware.sources import open_source
        from firmware.track import Tracker
        from firmware.windows import WindowAggregator

        cfg = self.config
        started = time.monotonic()
        notifier = Notifier()
        try:
            cfg.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(
                f"{cfg.state_dir}: cannot create the state directory ({exc.strerror})",
                hint="set state_dir to a writable directory (--state-dir)",
            ) from None
        stage = stage_from_config(cfg)
        outbox = Outbox(
            cfg.state_dir / "outbox.sqlite3",
            max_rows=cfg.outbox.max_rows,
            min_free_mb=cfg.outbox.min_free_mb,
        )
        source = None
        publisher = None
        preview = None
        previous = self._install_signals()
        try:
            first_seq = outbox.stats().next_seq
            source = open_source(cfg.source)
            width, height = source.size
            logger.info("source: %s", source.describe())
            tracker = Tracker(cfg.tracker)
            counter = _SwappableCounter(LineCounter(cfg.counter, width, height))
            aggregator = WindowAggregator(
                outbox,
                site=cfg.site,
                device=cfg.device,
                window_s=cfg.windows.seconds,
                suppress_below=cfg.windows.suppress_below,
            )
            publisher = Publisher(
                cfg.mqtt,
                site=cfg.site,
                device=cfg.device,
                outbox=outbox,
                health=self._health,
                version=__version__,
            )
            try:
                connected = self._first_connection(publisher)
            except BrokerError:
                publisher.stop(0)
                raise
            if not connected:
                err = publisher.last_error
                logger.warning(
                    "broker %s:%d not reachable yet (%s); counting anyway, windows wait "
                    "in the outbox",
                    cfg.mqtt.host,
                    cfg.mqtt.port,
                    err or "no answer",
                )
            sinks: list[Sink] = list(self.extra_sinks)
            if cfg.preview.enabled:
                from firmware.preview.hub import PreviewHub
                from firmware.preview.server import PreviewServer

                hub = PreviewHub(cfg.counter, on_counter_change=self._counter_changed)
                preview = PreviewServer(cfg.preview, hub, self.config_path)
                preview.start()
                logger.info("preview page on %s", preview.url)
                loop_stats = self.stats

                def to_preview(result: Any) -> None:
                    hub.publish(
                        result, counts=aggregator.current() or {}, health=loop_stats.as_health()
                    )

                sinks.append(to_preview)

            clock = WallClock(source.live, self.epoch_ns)
            self._camera_state = "ok"
            notifier.ready(f"counting on {source.describe()}")

            running = publisher
            windows_seen = 0

            def on_frame(stats: LoopStats) -> None:
                nonlocal windows_seen
                notifier.watchdog()
                if stats.windows_closed != windows_seen:
                    windows_seen = stats.windows_closed
                    running.wake()
                with self._counter_lock:
                    pending, self._pending_counter = self._pending_counter, None
                if pending is not None:
                    # A new line gets a fresh counter; tracks already in view are adopted with
                    # the side they started on, so a crossing in progress still counts once.
                    counter.swap(LineCounter(pending, width, height))
                if self.on_progress is not None:
                    self.on_progress(stats)

            lookahead = Lookahead(stage.anonymizer, delay_frames(cfg.anonymizer.hold_s, source.fps))
            run_loop(
                source,
                stage,
                tracker,
                counter,
                aggregator,
                clock=clock,
                stop=self.stop_event,
                sinks=sinks,
                on_frame=on_frame,
                stats=self.stats,
                lookahead=lookahead,
            )
            self._camera_state = "ended"
            end_wall = self.stats.last_wall_ns or clock(0)
            if not source.live and not self.stop_event.is_set():
                # a file ends at its media time; a live source at the wall clock
                end_wall = clock(int(self.stats.frames * 1e9 / max(source.fps, 1e-6)))
            elif source.live:
                end_wall = time.time_ns()
            aggregator.flush(end_wall)
            # Seqs consumed, not flush calls: a flush after a stall also writes the empty
            # windows of the gap, and each is a window the subscriber will see.
            self.stats.windows_closed = outbox.stats().next_seq - first_seq
            publisher.wake()
            notifier.stopping()
            drained = publisher.stop(self.drain_timeout_s)
            publisher = None
            depth = outbox.stats().depth
            return RunResult(
                self.stats.frames,
                self.stats.windows_closed,
                drained,
                depth,
                time.monotonic() - started,
            )
        finally:
            self._restore_signals(previous)
            if publisher is not None:
                publisher.stop(0)
            if preview is not None:
                preview.stop()
            if source is not None:
                source.close()
            outbox.close()
            notifier.close()

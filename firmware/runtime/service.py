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
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from firmware import __version__
from firmware.config.settings import Config
from firmware.errors import StorageError
from firmware.runtime.pipeline import LoopStats, Sink, WallClock

if TYPE_CHECKING:
    from firmware.anonymize.stage import Anonymized
    from firmware.count import SwitchableCounter
    from firmware.windows import WindowAggregator

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunResult:
    frames: int
    windows: int
    drained: bool
    undelivered: int
    seconds: float


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

    # ------------------------------------------------------------------ run
    def run(self) -> RunResult:
        # onnxruntime's telemetry is already off: importing firmware opted this process out.
        from firmware.anonymize.backfill import Lookahead, delay_frames
        from firmware.anonymize.stage import stage_from_config
        from firmware.count import SwitchableCounter
        from firmware.mqtt.publish import Publisher
        from firmware.outbox import Outbox, outbox_path
        from firmware.runtime import preflight
        from firmware.runtime.health import HealthProbe
        from firmware.runtime.pipeline import PeopleStage
        from firmware.runtime.pipeline import run as run_loop
        from firmware.runtime.sdnotify import Notifier
        from firmware.sources import open_source
        from firmware.track import Tracker
        from firmware.windows import WindowAggregator

        cfg = self.config
        started = time.monotonic()
        # everything 'config check' refuses, refused before anything starts or connects
        preflight.check(cfg, origin=str(self.config_path or "config"))
        try:
            cfg.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(
                f"{cfg.state_dir}: cannot create the state directory ({exc.strerror})",
                hint="set state_dir to a writable directory (--state-dir)",
            ) from None
        stage = stage_from_config(cfg)
        # Built before anything connects: a missing or wrong model stops the start here.
        person_detector = None
        if cfg.people.enabled:
            from firmware.detect import nanodet

            person_detector = nanodet.from_config(cfg.people, timeout_s=cfg.detector.timeout_s)
        with ExitStack() as cleanup:  # closed in reverse: preview, publisher, source, outbox
            notifier = Notifier()
            cleanup.callback(notifier.close)
            outbox = Outbox(
                outbox_path(cfg.state_dir),
                max_rows=cfg.outbox.max_rows,
                min_free_mb=cfg.outbox.min_free_mb,
            )
            cleanup.callback(outbox.close)
            cleanup.callback(self._restore_signals, self._install_signals())
            first_seq = outbox.stats().next_seq
            source = open_source(cfg.source)
            cleanup.callback(source.close)
            width, height = source.size
            logger.info("source: %s", source.describe())
            health = HealthProbe(self.stats)
            publisher = Publisher(
                cfg.mqtt,
                site=cfg.site,
                device=cfg.device,
                outbox=outbox,
                health=health,
                version=__version__,
            )
            # Undrained on any error; the normal end drains below and then this is a no-op.
            cleanup.callback(publisher.stop, 0)
            if not publisher.start_first(self.connect_timeout_s):
                logger.warning(
                    "broker %s:%d not reachable yet (%s); counting anyway, windows wait "
                    "in the outbox",
                    cfg.mqtt.host,
                    cfg.mqtt.port,
                    publisher.last_error or "no answer",
                )
            aggregator = WindowAggregator(
                outbox,
                site=cfg.site,
                device=cfg.device,
                window_s=cfg.windows.seconds,
                suppress_below=cfg.windows.suppress_below,
                on_closed=lambda _seq: publisher.wake(),
            )
            counter = SwitchableCounter(cfg.counter, width, height)
            sinks: list[Sink] = list(self.extra_sinks)
            if cfg.preview.enabled:
                sinks.append(self._start_preview(cleanup, counter, aggregator))

            clock = WallClock(source.live, self.epoch_ns)
            health.camera_state = "ok"
            notifier.ready(f"counting on {source.describe()}")

            def on_frame(stats: LoopStats) -> None:
                notifier.watchdog()
                if self.on_progress is not None:
                    self.on_progress(stats)

            lookahead = Lookahead(stage.anonymizer, delay_frames(cfg.anonymizer.hold_s, source.fps))
            tracker = Tracker(cfg.tracker)
            people = None
            if person_detector is not None:
                people = PeopleStage(
                    person_detector,
                    tracker,
                    counter,
                    every=cfg.people.every_n_frames,
                    heads=cfg.people.head_masking,
                )
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
                people=people,
            )
            health.camera_state = "ended"
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
            notifier.stopping()
            drained = publisher.stop(self.drain_timeout_s)
            return RunResult(
                self.stats.frames,
                self.stats.windows_closed,
                drained,
                outbox.stats().depth,
                time.monotonic() - started,
            )

    def _start_preview(
        self, cleanup: ExitStack, counter: SwitchableCounter, aggregator: WindowAggregator
    ) -> Sink:
        """Start the preview page; return the sink that feeds it anonymized frames."""
        from firmware.preview.hub import PreviewHub
        from firmware.preview.server import PreviewServer

        hub = PreviewHub(self.config.counter, on_counter_change=counter.request)
        preview = PreviewServer(self.config.preview, hub, self.config_path)
        preview.start()
        cleanup.callback(preview.stop)
        logger.info("preview page on %s", preview.url)
        stats = self.stats

        def to_preview(result: Anonymized) -> None:
            hub.publish(result, counts=aggregator.current() or {}, health=stats.as_health())

        return to_preview

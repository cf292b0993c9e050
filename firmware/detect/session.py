"""One way to open an onnxruntime session for a detector and to run it with a time limit.

Shared by the face and the person detector, which alternate in one process on a small CPU.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from firmware.errors import DetectorError


class BoundedSession:
    """An onnxruntime CPU session whose runs end after ``timeout_s`` (None: no limit).

    ``threads``: intra-op threads. Spin-waiting is off: with two sessions alternating, the idle
    session's spinning threads take the cores the other one needs (CenterFace 32.9 -> 18.2 ms
    per run with 2 threads when it is off). Log severity 3: CenterFace triggers ~160 harmless
    warnings at 2.
    """

    def __init__(
        self, path: Path, outputs: list[str], *, threads: int, timeout_s: float | None
    ) -> None:
        import onnxruntime as ort  # heavy; imported only when a detector is built

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._ort: Any = ort
        self._session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self._outputs = outputs
        self.timeout_s = timeout_s
        first = self._session.get_inputs()[0]
        self.input_type: str = first.type
        """The first input's element type, as onnxruntime names it (``"tensor(float)"``)."""
        self.input_shape: list[object] = list(first.shape)
        """The first input's dims: ints, or names for the dynamic ones."""

    def warm_up(self, feeds: dict[str, NDArray[Any]]) -> None:
        """One run without a time limit: the first inference allocates arenas and is several
        times slower, which must not count against a frame's detection budget."""
        self._session.run(self._outputs, feeds)

    def run(
        self, feeds: dict[str, NDArray[Any]], *, what: str, hint: str
    ) -> list[NDArray[np.float32]]:
        """The outputs for ``feeds``; :class:`DetectorError` ("``what`` timed out" or failed)."""
        options = self._ort.RunOptions()
        timer: threading.Timer | None = None
        if self.timeout_s is not None:
            # onnxruntime checks this flag between kernels, so a stuck run ends promptly.
            timer = threading.Timer(self.timeout_s, lambda: setattr(options, "terminate", True))
            timer.daemon = True
            timer.start()
        try:
            out: list[NDArray[np.float32]] = self._session.run(self._outputs, feeds, options)
        except Exception as exc:  # onnxruntime raises untyped errors (Fail, RuntimeException)
            timed_out = bool(options.terminate)
            raise DetectorError(
                f"{what} timed out" if timed_out else f"{what} failed: {exc}", hint=hint
            ) from exc
        finally:
            if timer is not None:
                timer.cancel()
        return out

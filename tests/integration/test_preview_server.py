"""The preview server over real HTTP, fed by the real anonymizing stage with a real face.

``Feed`` and ``RecordingHub`` are shared with ``test_preview_browser.py``.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from firmware.anonymize.stage import AnonymizingStage, stage_from_config
from firmware.boxes import iou_matrix
from firmware.config.settings import CounterConfig, PreviewConfig, from_dict, load
from firmware.detect.centerface import CenterFace
from firmware.errors import ConfigError
from firmware.frames import Frame
from firmware.media.image import decode_jpeg
from firmware.preview import PreviewHub, PreviewServer
from firmware.preview.server import CSP, requires_token
from tests.support.faces import FACES, load_bgr

pytestmark = pytest.mark.integration

W, H = 640, 360
CROP = (120, 0, 360, 260)  # the astronaut's head in astronaut.png
TOKEN = "t0ken-for-tests-only-4f9a2c"
CONFIG_TOML = """\
# preview test device
site = "store-1"
device = "door-1"

[counter]
line = [0.2, 0.5, 0.8, 0.5]  # across the door
inside = [0.5, 0.9]
"""


# --- a real face, moving, through the real stage -----------------------------------------
def moving_face(i: int) -> tuple[NDArray[np.uint8], NDArray[np.float32]]:
    """Frame ``i``: gravel with the astronaut's head, sliding 12 px per frame; and its face box."""
    gravel = load_bgr("gravel.png")
    frame = np.ascontiguousarray(np.tile(gravel, (1, 2, 1))[:H, :W])
    astro = load_bgr("astronaut.png")
    x1, y1, x2, y2 = CROP
    cw, ch = x2 - x1, y2 - y1
    ox = 20 + (i * 12) % (W - cw - 40)
    oy = 40
    frame[oy : oy + ch, ox : ox + cw] = astro[y1:y2, x1:x2]
    fx1, fy1, fx2, fy2 = FACES["astronaut.png"][0]
    box = np.array([[fx1 - x1 + ox, fy1 - y1 + oy, fx2 - x1 + ox, fy2 - y1 + oy]], np.float32)
    return frame, box


class RecordingHub(PreviewHub):
    """A real hub that also keeps every JPEG it encodes, with its frame number: every frame a
    viewer receives is one of these (viewers only ever get the hub's encoded bytes)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.served: dict[int, bytes] = {}

    def _encoded(self, seq: int, image: NDArray[np.uint8]) -> bytes:
        data = super()._encoded(seq, image)
        self.served.setdefault(seq, data)
        return data


class Feed(threading.Thread):
    """The service's role in these tests: frames -> AnonymizingStage -> hub.publish."""

    def __init__(self, hub: PreviewHub, stage: AnonymizingStage, fps: float = 8.0) -> None:
        super().__init__(name="test-feed", daemon=True)
        self.hub, self.stage, self.fps = hub, stage, fps
        self.stop_event = threading.Event()
        self.published = 0

    def run(self) -> None:
        i = 0
        while not self.stop_event.is_set():
            image, _ = moving_face(i)
            result = self.stage.process(Frame(image, int(i * 1e9 / self.fps), i))
            self.hub.publish(
                result,
                counts={"entries": i // 8, "exits": i // 16, "occupancy": 1, "visitors": i // 8},
                health={"fps": self.fps, "detect_ms": round(result.detect_ms, 1), "camera": "ok"},
            )
            self.published += 1
            i += 1
            self.stop_event.wait(1 / self.fps)

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=10)


@pytest.fixture(scope="module")
def detector() -> CenterFace:
    return CenterFace()


@pytest.fixture(scope="module")
def stage() -> AnonymizingStage:
    return stage_from_config(from_dict({}))


def face_free(detector: CenterFace, served: dict[int, bytes]) -> None:
    """Assert the real detector finds no face where the face was in any served JPEG.

    Hub frame ``seq`` shows ``moving_face(seq - 1)``. A detection is "the face" when its centre
    lies in the true face box or it overlaps that box with IoU >= 0.3. (The anonymized frames
    also draw weak detections, 0.2-0.4, on the collar just below the mosaic: not a face.)
    """
    assert served, "no JPEG was served"
    for seq, data in sorted(dict(served).items()):
        _, box = moving_face(seq - 1)
        dets = detector(decode_jpeg(data))
        if len(dets) == 0:
            continue
        centre = (dets.boxes[:, :2] + dets.boxes[:, 2:]) / 2
        inside = np.all((centre >= box[0, :2]) & (centre <= box[0, 2:]), axis=1)
        iou = iou_matrix(box, dets.boxes)[0]
        assert not np.any(inside | (iou >= 0.3)), (
            f"served frame {seq} shows the face: {dets.array.tolist()}"
        )


def test_the_moving_face_is_detectable_raw(detector: CenterFace) -> None:
    """Precondition: the feed shows a face the detector finds, wherever it slides."""
    for i in (0, 7, 19):
        image, box = moving_face(i)
        assert iou_matrix(box, detector(image).boxes).max() >= 0.5


# --- servers ------------------------------------------------------------------------------
def free_config(tmp_path: Path, bind: str = "127.0.0.1", token: str | None = None) -> PreviewConfig:
    token_file = None
    if token is not None:
        token_file = tmp_path / "preview-token"
        token_file.write_text(token + "\n")
        token_file.chmod(0o600)
    config = PreviewConfig(enabled=True, bind=bind, port=8080, token_file=token_file)
    return config.model_copy(update={"port": 0})  # 0: an ephemeral port, reported by .port


def second_loopback() -> str:
    """127.0.0.2 (beyond loopback by our rule; Linux answers on all of 127/8)."""
    with socket.socket() as s:
        s.bind(("127.0.0.2", 0))
    return "127.0.0.2"


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    p = tmp_path / "anoncam.toml"
    p.write_text(CONFIG_TOML)
    return p


@pytest.fixture
def applied() -> list[CounterConfig]:
    return []


@pytest.fixture
def hub(config_file: Path, applied: list[CounterConfig]) -> RecordingHub:
    return RecordingHub(load(config_file).counter, on_counter_change=applied.append, max_fps=20)


@pytest.fixture
def feed(hub: RecordingHub, stage: AnonymizingStage) -> Iterator[Feed]:
    stage.hold.reset()
    f = Feed(hub, stage)
    f.start()
    yield f
    f.stop()


@pytest.fixture
def local(tmp_path: Path, hub: RecordingHub, config_file: Path) -> Iterator[PreviewServer]:
    server = PreviewServer(free_config(tmp_path), hub, config_file)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def remote(tmp_path: Path, hub: RecordingHub, config_file: Path) -> Iterator[PreviewServer]:
    server = PreviewServer(free_config(tmp_path, second_loopback(), TOKEN), hub, config_file)
    server.start()
    yield server
    server.stop()


def request(
    server: PreviewServer,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(server.config.bind, server.port, timeout=10)
    hdrs = dict(headers or {})
    data = raw
    if body is not None:
        data = json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    conn.request(method, path, body=data, headers=hdrs)
    resp = conn.getresponse()
    out = resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    conn.close()
    return out


def read_stream(
    server: PreviewServer,
    count: int,
    headers: dict[str, str] | None = None,
    path: str = "/stream.mjpg",
) -> list[bytes]:
    """Read ``count`` JPEG parts from the MJPEG stream."""
    conn = http.client.HTTPConnection(server.config.bind, server.port, timeout=20)
    conn.request("GET", path, headers=headers or {})
    resp = conn.getresponse()
    assert resp.status == 200
    assert resp.getheader("Content-Type") == "multipart/x-mixed-replace; boundary=anoncamframe"
    parts: list[bytes] = []
    while len(parts) < count:
        assert resp.readline() == b"--anoncamframe\r\n"
        head: dict[str, str] = {}
        while (line := resp.readline()) not in (b"\r\n", b""):
            k, v = line.decode().split(":", 1)
            head[k.strip().lower()] = v.strip()
        assert head["content-type"] == "image/jpeg"
        parts.append(resp.read(int(head["content-length"])))
        assert resp.read(2) == b"\r\n"
    conn.close()
    return parts


# --- tests --------------------------------------------------------------------------------
def test_every_served_frame_is_anonymized(
    local: PreviewServer, hub: RecordingHub, feed: Feed, detector: CenterFace
) -> None:
    """P2: the stream carries only the stage's output; decoded and searched by the real
    CenterFace, no served JPEG shows the face that is in every raw frame."""
    parts = read_stream(local, 6)
    assert len(set(parts)) >= 2, "the stream should move on to new frames"
    assert all(decode_jpeg(p).shape == (H, W, 3) for p in parts)
    assert set(parts) <= set(hub.served.values())
    face_free(detector, hub.served)


def test_publish_accepts_only_anonymized_results(hub: RecordingHub) -> None:
    """Privacy guard: a raw Frame handed to the hub by mistake is refused, not shown."""
    image, _ = moving_face(0)
    with pytest.raises(TypeError, match="Anonymized"):
        hub.publish(Frame(image, 0, 0))  # type: ignore[arg-type]


def test_frames_are_encoded_only_when_watched(stage: AnonymizingStage) -> None:
    """Without viewers no JPEG is encoded; the hub keeps a single image however many frames."""
    image, _ = moving_face(0)
    result = stage.process(Frame(image, 0, 0))
    h = PreviewHub(CounterConfig())
    for _ in range(50):
        h.publish(result)
    assert h.frames_encoded == 0
    got = h.wait_jpeg(0, timeout=1)
    assert got is not None and got[0] == 50 and h.frames_encoded == 1
    assert h.wait_jpeg(50, timeout=0.05) is None  # nothing newer: the viewer waits
    h.close()
    assert h.wait_jpeg(0, timeout=1) is None


def test_page_state_and_security_headers(local: PreviewServer, feed: Feed) -> None:
    status, headers, body = request(local, "GET", "/")
    assert status == 200 and b'src="/stream.mjpg"' in body
    assert headers["content-security-policy"] == CSP
    assert headers["x-frame-options"] == "DENY"
    assert headers["cache-control"] == "no-store"
    assert b"http://" not in body.replace(b"http://www.w3.org/2000/svg", b"")  # no external URL
    for path in ("/preview.js", "/preview.css"):
        status, _, text = request(local, "GET", path)
        assert status == 200 and b"http://" not in text.replace(b"http://www.w3.org/2000/svg", b"")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        state = json.loads(request(local, "GET", "/api/state")[2])
        if state["stream"]["frames_published"] and state["counts"]:
            break
        time.sleep(0.1)
    assert state["counter"]["line"] == [0.2, 0.5, 0.8, 0.5]
    assert state["counter"]["inside"] == [0.5, 0.9]
    assert state["stream"]["width"] == W and state["config_writable"] is True
    assert set(state["counts"]) == {"entries", "exits", "occupancy", "visitors"}
    assert state["health"]["camera"] == "ok"
    assert request(local, "GET", "/etc/passwd")[0] == 404
    assert request(local, "GET", "/../anoncam.toml")[0] == 404


def test_saving_a_line_writes_the_config_and_applies_it(
    local: PreviewServer, config_file: Path, hub: RecordingHub, applied: list[CounterConfig]
) -> None:
    new = {"line": [0.1, 0.4, 0.9, 0.6], "inside": [0.4, 0.95]}
    status, _, body = request(local, "POST", "/api/counter", new)
    assert status == 200, body
    reply = json.loads(body)
    assert reply["saved_to"] == str(config_file)
    saved = load(config_file)
    assert saved.counter.line == (0.1, 0.4, 0.9, 0.6) and saved.counter.inside == (0.4, 0.95)
    assert applied == [saved.counter]
    assert hub.counter == saved.counter
    assert config_file.read_text().startswith("# preview test device\n")  # comments kept
    assert json.loads(request(local, "GET", "/api/state")[2])["counter"]["line"] == [
        0.1,
        0.4,
        0.9,
        0.6,
    ]


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"line": [0.1, 0.4, 1.9, 0.6], "inside": [0.4, 0.95]}, "counter.line.2"),
        ({"line": [0.1, 0.5, 0.9, 0.5], "inside": [0.5, 0.5]}, "counter"),
        ({"line": [0.1, 0.5, 0.9, 0.5]}, "counter.inside"),
        ({"line": "0.1,0.5", "inside": [0.5, 0.9]}, "counter.line"),
    ],
)
def test_invalid_lines_get_400_with_the_field_path(
    local: PreviewServer, config_file: Path, applied: list[CounterConfig], body: Any, path: str
) -> None:
    before = config_file.read_bytes()
    status, _, reply = request(local, "POST", "/api/counter", body)
    assert status == 400
    assert path in [p["path"] for p in json.loads(reply)["problems"]]
    assert config_file.read_bytes() == before and applied == []


def test_malformed_and_cross_site_posts_are_refused(
    local: PreviewServer, config_file: Path
) -> None:
    """Not JSON, the wrong content type (what an HTML form on another site would send), a
    foreign Origin, or an oversized body: refused, nothing written."""
    before = config_file.read_bytes()
    good = {"line": [0.1, 0.4, 0.9, 0.6], "inside": [0.4, 0.95]}
    assert (
        request(
            local,
            "POST",
            "/api/counter",
            raw=b"{nope",
            headers={"Content-Type": "application/json"},
        )[0]
        == 400
    )
    assert (
        request(
            local,
            "POST",
            "/api/counter",
            raw=json.dumps(good).encode(),
            headers={"Content-Type": "text/plain"},
        )[0]
        == 415
    )
    assert (
        request(local, "POST", "/api/counter", good, headers={"Origin": "http://evil.example"})[0]
        == 403
    )
    assert (
        request(
            local,
            "POST",
            "/api/counter",
            raw=b"[" + b"0," * 5000 + b"0]",
            headers={"Content-Type": "application/json"},
        )[0]
        == 413
    )
    assert config_file.read_bytes() == before


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        (
            b'{"line": [' + b"9" * 4000 + b', 0.4, 0.9, 0.6], "inside": [0.4, 0.95]}',
            "counter.line.0",
        ),
        (b"[" * 2000 + b"]" * 2000, None),
        (b'{"line": ' + b"[" * 1990 + b"]" * 1990 + b', "inside": [0.4, 0.95]}', None),
    ],
)
def test_huge_numbers_and_deep_nesting_get_400(
    local: PreviewServer, config_file: Path, raw: bytes, path: str | None
) -> None:
    """Regression (issue 12 item 11): a 4000-digit number (OverflowError in config.edit) or
    2000-deep nesting (RecursionError in json) dropped the connection with a traceback; both
    are now a 400 naming the problem, nothing is written, and the server keeps serving."""
    before = config_file.read_bytes()
    assert len(raw) <= 4096  # within the body limit: these reach the parser
    status, _, reply = request(
        local, "POST", "/api/counter", raw=raw, headers={"Content-Type": "application/json"}
    )
    assert status == 400, reply
    answer = json.loads(reply)
    if path is not None:
        assert path in [p["path"] for p in answer["problems"]]
    assert config_file.read_bytes() == before
    assert request(local, "GET", "/api/state")[0] == 200


def test_without_a_config_file_saving_is_409(tmp_path: Path, hub: RecordingHub) -> None:
    with PreviewServer(free_config(tmp_path), hub, None) as server:
        status, _, body = request(
            server, "POST", "/api/counter", {"line": [0.1, 0.4, 0.9, 0.6], "inside": [0.4, 0.95]}
        )
        state = json.loads(request(server, "GET", "/api/state")[2])
    assert status == 409 and "without a config file" in json.loads(body)["error"]
    assert state["config_writable"] is False


def test_loopback_refuses_foreign_host_headers(local: PreviewServer) -> None:
    """DNS rebinding guard: a page on evil.example resolving to 127.0.0.1 gets nothing."""
    assert request(local, "GET", "/api/state", headers={"Host": "evil.example:8080"})[0] == 403
    assert (
        request(local, "GET", "/api/state", headers={"Host": f"localhost:{local.port}"})[0] == 200
    )


def test_bind_rule() -> None:
    assert (
        not requires_token("127.0.0.1")
        and not requires_token("::1")
        and not requires_token("localhost")
    )
    assert (
        requires_token("0.0.0.0") and requires_token("127.0.0.2") and requires_token("192.168.1.20")
    )


def test_beyond_loopback_needs_a_usable_token_file(tmp_path: Path, hub: RecordingHub) -> None:
    bind = second_loopback()
    with pytest.raises(ConfigError, match="no access token") as info:
        PreviewServer(free_config(tmp_path, bind), hub).start()
    assert info.value.problems[0][0] == "preview.token_file"
    missing = free_config(tmp_path, bind).model_copy(update={"token_file": tmp_path / "absent"})
    with pytest.raises(ConfigError, match="not found"):
        PreviewServer(missing, hub).start()
    with pytest.raises(ConfigError, match="too short"):
        PreviewServer(free_config(tmp_path, bind, token="short"), hub).start()


def test_beyond_loopback_every_route_needs_the_token(
    remote: PreviewServer, feed: Feed, config_file: Path
) -> None:
    """Without the token (or with a wrong one) every route is 401 and nothing is written; with
    it in the query, a Bearer header or the cookie, the page, state and stream are served."""
    before = config_file.read_bytes()
    body = {"line": [0.1, 0.4, 0.9, 0.6], "inside": [0.4, 0.95]}
    for headers in (
        {},
        {"Authorization": "Bearer wrong-token-xxxxxxxxxxxx"},
        {"Cookie": "anoncam_preview=wrong-token-xxxxxxxxxxxx"},
    ):
        for path in ("/", "/stream.mjpg", "/api/state", "/preview.js", "/?token=nope"):
            assert request(remote, "GET", path, headers=headers)[0] == 401, (path, headers)
        assert request(remote, "POST", "/api/counter", body, headers=headers)[0] == 401
    assert config_file.read_bytes() == before

    status, headers, _ = request(remote, "GET", f"/?token={TOKEN}")
    assert status == 303 and headers["location"] == "/"
    cookie = headers["set-cookie"]
    assert (
        f"anoncam_preview={TOKEN}" in cookie
        and "HttpOnly" in cookie
        and "SameSite=Strict" in cookie
    )
    assert request(remote, "GET", "/", headers={"Cookie": f"anoncam_preview={TOKEN}"})[0] == 200
    assert (
        request(remote, "GET", "/api/state", headers={"Authorization": f"Bearer {TOKEN}"})[0] == 200
    )
    assert len(read_stream(remote, 2, path=f"/stream.mjpg?token={TOKEN}")) == 2
    status, _, _ = request(
        remote, "POST", "/api/counter", body, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert status == 200


def test_viewers_are_capped_and_stop_ends_open_streams(
    tmp_path: Path, hub: RecordingHub, feed: Feed
) -> None:
    """At most max_viewers streams; stop() closes the ones still open and frees the port."""
    server = PreviewServer(free_config(tmp_path), hub, None, max_viewers=1)
    server.start()
    port = server.port
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/stream.mjpg")
    first = conn.getresponse()
    assert first.status == 200 and first.readline() == b"--anoncamframe\r\n"
    assert request(server, "GET", "/stream.mjpg")[0] == 503
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 5
    with pytest.raises((http.client.IncompleteRead, ConnectionError)):
        while first.read(65536):
            pass
        raise ConnectionError("stream ended")
    conn.close()
    assert hub.viewers == 0
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as a restarted server would
        s.bind(("127.0.0.1", port))  # the port is free again

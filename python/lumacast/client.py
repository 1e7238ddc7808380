"""HTTP clients for a lumacast server: :class:`Pusher` (frames in) and :class:`Server`
(the JSON API: start, stop, stats, raw values)."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Dict, List, Optional, Type

import numpy as np

from ._wire import encode

DEFAULT_TIMEOUT = 10.0


class LumacastError(Exception):
    """A request the server refused (``status`` is its HTTP status, ``message`` the
    ``message`` of its JSON answer) or that failed on the way (``status`` is ``None``)."""

    def __init__(self, status: Optional[int], message: str, body: Any = None) -> None:
        self.status = status
        self.message = message
        self.body = body
        super().__init__(f"HTTP {status}: {message}" if status is not None else message)


def _error_message(raw: bytes) -> tuple:
    """The server's JSON error message and the parsed body (or the raw text)."""
    text = raw.decode("utf-8", "replace")
    try:
        doc = json.loads(text)
    except ValueError:
        return text.strip(), text
    if isinstance(doc, dict):
        for key in ("message", "error", "detail"):
            if key in doc:
                return str(doc[key]), doc
    return text.strip(), doc


def _split_url(url: str):
    u = urllib.parse.urlsplit(url)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise ValueError(f"url must look like http://HOST:PORT or https://HOST:PORT, got {url!r}")
    return u


class Pusher:
    """Pushes numpy frames to one push detector over one persistent HTTP/1.1 connection.

    ``url`` is the server's base (``http://127.0.0.1:8080``), ``detector`` the name of a
    detector configured as ``--detector NAME=push``. ``token`` is sent as
    ``Authorization: Bearer TOKEN``. ``timeout`` (seconds) bounds connecting and every
    send and receive on the socket. ``bit_depth`` is the default for mono16 frames
    (significant bits, 1..16; 8-bit frames ignore it). For ``https`` URLs, ``ssl_context`` verifies the server
    (e.g. ``ssl.create_default_context(cafile=...)``).

    The connection is opened on the first push and kept open (keep-alive). When a reused
    connection turns out to be closed by the server, the frame is sent once more on a
    new connection; any other failure raises :class:`LumacastError`.
    ``connections_opened`` counts the TCP connections this pusher has opened.

    Use it as a context manager, or call :meth:`close`::

        with lumacast.Pusher("http://127.0.0.1:8080", "ext") as p:
            p.push(frame)
    """

    def __init__(
        self,
        url: str,
        detector: str,
        token: Optional[str] = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        bit_depth: Optional[int] = None,
        ssl_context: Optional[ssl.SSLContext] = None,
    ) -> None:
        u = _split_url(url)
        if not detector:
            raise ValueError("detector must be a non-empty name")
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self.url = url.rstrip("/")
        self.detector = detector
        self.timeout = float(timeout)
        self.bit_depth = bit_depth
        self.path = (u.path.rstrip("/") or "") + "/api/detectors/{}/frames".format(
            urllib.parse.quote(detector, safe="")
        )
        self._token = token
        #: TCP connections opened so far (1 while the server keeps the connection).
        self.connections_opened = 0
        #: Frames the server accepted.
        self.frames_pushed = 0
        #: The server's JSON answer to the last accepted frame (``frames_received``,
        #: ``seq``, ``width``, ...).
        self.last_response: Optional[Dict[str, Any]] = None
        self._conn = self._new_connection(u, ssl_context)

    def _new_connection(self, u, ssl_context):
        owner = self

        def connected(sock: socket.socket) -> None:
            owner.connections_opened += 1
            # Headers and pixels go out in separate writes: no Nagle delay between them.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        if u.scheme == "https":

            class _Https(http.client.HTTPSConnection):
                def connect(self) -> None:
                    super().connect()
                    connected(self.sock)

            return _Https(u.hostname, u.port or 443, timeout=self.timeout, context=ssl_context)

        class _Http(http.client.HTTPConnection):
            def connect(self) -> None:
                super().connect()
                connected(self.sock)

        return _Http(u.hostname, u.port or 80, timeout=self.timeout)

    def push(
        self,
        frame: np.ndarray,
        timestamp_us: Optional[int] = None,
        *,
        frame_number: Optional[int] = None,
        bit_depth: Optional[int] = None,
    ) -> Dict[str, Any]:
        """Sends one frame and waits for the server's answer, which it returns.

        ``frame``: 2-D ``uint8`` (mono8), 2-D ``uint16`` (mono16) or ``(height, width,
        3)`` ``uint8`` (RGB). ``timestamp_us``: capture time in microseconds since the
        UNIX epoch (``time.time_ns() // 1000``); ``None`` lets the server use the
        arrival time. ``frame_number``: the camera's counter; ``None`` lets the server
        number the frame. ``bit_depth``: significant bits of a mono16 frame (default:
        the pusher's, else 16).

        Raises ``TypeError``/``ValueError`` for an array of another dtype or shape
        (nothing is sent) and :class:`LumacastError` when the server refuses the frame
        (e.g. a side under 16 pixels, an unknown detector) or the connection fails.
        """
        frame = np.asarray(frame)
        if bit_depth is None and frame.dtype == np.uint16:
            bit_depth = self.bit_depth
        header, pixels = encode(
            frame, frame_number=frame_number, timestamp_us=timestamp_us, bit_depth=bit_depth
        )
        body = memoryview(pixels).cast("B")
        for attempt in (0, 1):
            reused = self._conn.sock is not None
            try:
                status, raw = self._post(header, body)
                break
            except (ConnectionError, http.client.HTTPException) as e:
                # ConnectionResetError, BrokenPipeError, RemoteDisconnected, BadStatusLine:
                # a kept-alive connection the server has closed. Retry once, fresh.
                self._conn.close()
                if attempt == 0 and reused:
                    continue
                raise LumacastError(None, f"pushing to {self.url}{self.path} failed: {e!r}") from e
            except OSError as e:  # timeouts, refused connections, ...
                self._conn.close()
                raise LumacastError(None, f"pushing to {self.url}{self.path} failed: {e!r}") from e
        if status >= 400:
            message, doc = _error_message(raw)
            raise LumacastError(status, message, doc)
        try:
            answer = json.loads(raw.decode("utf-8"))
        except ValueError:
            answer = {"raw": raw.decode("utf-8", "replace")}
        self.frames_pushed += 1
        self.last_response = answer
        return answer

    def _post(self, header: bytes, body: memoryview) -> tuple:
        c = self._conn
        c.putrequest("POST", self.path, skip_accept_encoding=True)
        c.putheader("Content-Type", "application/octet-stream")
        c.putheader("Content-Length", str(len(header) + body.nbytes))
        if self._token:
            c.putheader("Authorization", f"Bearer {self._token}")
        c.endheaders(header)  # the HTTP headers and the 32-byte frame header, one write
        c.send(body)  # the pixels straight from the array, no copy
        resp = c.getresponse()
        return resp.status, resp.read()

    def close(self) -> None:
        """Closes the connection (a later push opens a new one)."""
        self._conn.close()

    def __enter__(self) -> "Pusher":
        return self

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc, tb) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"Pusher({self.url!r}, {self.detector!r}, frames_pushed={self.frames_pushed}, "
            f"connections_opened={self.connections_opened})"
        )


class Server:
    """A few calls of the server's JSON API (one short request each, bounded by
    ``timeout`` seconds); errors raise :class:`LumacastError` with the server's message."""

    def __init__(
        self,
        url: str,
        token: Optional[str] = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        ssl_context: Optional[ssl.SSLContext] = None,
    ) -> None:
        _split_url(url)
        self.url = url.rstrip("/")
        self.timeout = float(timeout)
        self._token = token
        self._ssl = ssl_context

    def request(self, method: str, path: str, query: Optional[Dict[str, Any]] = None,
                body: Any = None) -> Any:
        """``method`` ``path`` (e.g. ``"/api/stats"``) with a JSON ``body``; the JSON answer."""
        url = self.url + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = None if body is None else json.dumps(body).encode("utf-8")
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if self._token:
            req.add_header("Authorization", f"Bearer {self._token}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self._ssl) as r:
                raw = r.read()
        except urllib.error.HTTPError as e:
            message, doc = _error_message(e.read())
            raise LumacastError(e.code, message, doc) from None
        except (urllib.error.URLError, OSError) as e:
            raise LumacastError(None, f"{method} {url} failed: {getattr(e, 'reason', e)}") from e
        return json.loads(raw.decode("utf-8")) if raw else None

    def detectors(self) -> List[Dict[str, Any]]:
        """Every configured detector with its kind and state (``GET /api/detectors``)."""
        return self.request("GET", "/api/detectors")["detectors"]

    def stats(self, detector: Optional[str] = None) -> Any:
        """``GET /api/stats``; with ``detector``, only that detector's entry."""
        doc = self.request("GET", "/api/stats")
        if detector is None:
            return doc
        for d in doc["detectors"]:
            if d["detector"] == detector:
                return d
        raise LumacastError(None, f"no detector {detector!r} in /api/stats")

    def start(self, detector: str, **params: Any) -> Dict[str, Any]:
        """Starts a detector's stream (idempotent), with optional stream parameters."""
        return self.request(
            "POST", "/LiveViewController/startLiveView", {"detectorName": detector}, params or None
        )

    def stop(self, detector: str) -> Dict[str, Any]:
        """Stops a detector's stream and closes its viewers."""
        return self.request("POST", "/LiveViewController/stopLiveView", {"detectorName": detector})

    def set_params(self, detector: str, **params: Any) -> Dict[str, Any]:
        """Changes stream parameters (``PATCH /api/detectors/{name}/params``), e.g.
        ``pixel_um=6.5`` (µm per detector pixel: the page's scale bar, µm in the values
        answers) or ``gamma=0.5``; ``None`` resets one. The parameters in force."""
        return self.request("PATCH", f"/api/detectors/{detector}/params", body=params)["params"]

    def value(self, detector: str, x: int, y: int) -> Any:
        """The raw value of pixel (x, y) of the newest frame: an int (mono, in raw
        units) or ``[r, g, b]``."""
        return self.request("GET", f"/api/detectors/{detector}/values", {"x": x, "y": y})["value"]

"""A raw HTTP/1.1 client over a socket, for requests no client library would send.

aiohttp's and urllib's clients fix up what the property tests want to break: they
compute Content-Length, encode headers, refuse control bytes. This one writes the
request line, the header bytes and the body exactly as given, can half-close the
socket after a short body (so the server sees the body end before its
Content-Length), and reads one response (``Connection: close``) until the server
closes.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import socket
import time
from typing import Any

#: test name -> {outcome: number of generated cases}, printed in pytest's summary.
CASES: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)


def record_cases(test: str, outcome: str) -> None:
    CASES[test][outcome] += 1


#: Longest the server may take to answer one generated request.
TIMEOUT_S = 15.0


@dataclasses.dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as strict JSON (RFC 8259: no NaN or Infinity tokens)."""

        def refuse(token: str) -> Any:
            raise ValueError(f"{token} is not JSON")

        return json.loads(self.body, parse_constant=refuse)


def request(
    port: int,
    method: str,
    target: bytes,
    *,
    headers: list[tuple[bytes, bytes]] = (),  # type: ignore[assignment]
    body: bytes = b"",
    content_length: int | None = -1,
    half_close: bool = False,
) -> Response | None:
    """Send one request; ``None`` when the server closed without an answer.

    ``content_length`` -1 sends the body's length, ``None`` sends no header (for
    ``Transfer-Encoding`` cases), any other number is sent as is.
    """
    head = [method.encode() + b" " + target + b" HTTP/1.1", b"Host: 127.0.0.1"]
    head.append(b"Connection: close")
    head += [name + b": " + value for name, value in headers]
    if content_length is not None:
        n = len(body) if content_length == -1 else content_length
        head.append(b"Content-Length: " + str(n).encode())
    raw = b"\r\n".join(head) + b"\r\n\r\n" + body
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S) as sock:
        try:
            sock.sendall(raw)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered early (413) and closed; read what it said
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
    return parse(b"".join(chunks))


def parse(data: bytes) -> Response | None:
    if not data:
        return None
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.decode("latin-1").strip().lower()] = value.decode("latin-1").strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = _dechunk(body)
    return Response(status, headers, body)


def _dechunk(body: bytes) -> bytes:
    out = []
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out.append(rest[:size])
        body = rest[size + 2 :]
    return b"".join(out)


def get(port: int, target: str) -> Response | None:
    return request(port, "GET", target.encode())


def wait_for(port: int, target: str, timeout_s: float) -> None:
    """Poll ``target`` until it answers 200."""
    deadline = time.monotonic() + timeout_s
    last: Response | OSError | None = None
    while time.monotonic() < deadline:
        try:
            last = get(port, target)
            if last is not None and last.status == 200:
                return
        except OSError as exc:
            last = exc
        time.sleep(0.05)
    raise TimeoutError(f"{target} did not answer 200 within {timeout_s}s: {last!r}")

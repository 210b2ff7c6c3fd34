"""Hostile input to the runtime's HTTP API, generated rather than listed.

Properties, over every generated request (bodies, content types, headers, framing,
query parameters; see ``http_strategies``): the runtime never answers 500 and always
answers (a request whose framing is broken may be closed unanswered); every error
answer has the one error shape, with a message naming the field or parameter at
fault; every answer that claims JSON is strict JSON (no ``NaN``); and afterwards the
server is alive: ``/live`` and a valid ``/v1/detect`` succeed.

Each test prints how many cases it ran (pytest's terminal summary, "generated cases").
"""

from __future__ import annotations

import base64
import gzip
import urllib.parse
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.property import http_strategies as hs
from tests.property import rawhttp
from tests.property.conftest import CAMERA, MAX_BODY_BYTES, LiveRuntime
from tests.property.rawhttp import record_cases

SETTINGS = settings(
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

#: Words one of which every body error message names (the field or part at fault).
BODY_FIELDS = (
    "body",
    "image",
    "array",
    "frames",
    "Content-Type",
    "JSON",
    "camera_id",
    "timestamp",
    "deadline_ms",
    "priority",
    "queue",
)


def check(test: str, response: rawhttp.Response | None, *, may_close: bool = False) -> Any:
    """The properties every answer has; returns the parsed JSON body (or None)."""
    if response is None:
        assert may_close, "the server closed the connection without an answer"
        record_cases(test, "closed")
        return None
    record_cases(test, str(response.status))
    assert response.status != 500, response.body[:2000]
    if not response.body:
        return None  # HEAD
    doc = None
    if response.body and response.headers.get("content-type", "").startswith("application/json"):
        doc = response.json()
    if response.status >= 400:
        if doc is None:
            # Only aiohttp's HTTP parser answers without the error shape: the request
            # was not HTTP enough to reach a handler.
            assert response.status == 400, (response.status, response.body[:500])
            return None
        if "ready" in doc or "live" in doc:
            return doc  # the probes' own answers: 503 with the reasons
        error = doc["error"]
        assert error["status"] == response.status
        assert isinstance(error["reason"], str)
        assert error["reason"]
        assert isinstance(error["message"], str)
        assert error["message"]
    return doc


def assert_alive(runtime: LiveRuntime) -> None:
    live = rawhttp.get(runtime.port, "/live")
    assert live is not None
    assert live.status == 200, live
    detect = rawhttp.request(
        runtime.port,
        "POST",
        b"/v1/detect",
        headers=[(b"Content-Type", b"image/jpeg")],
        body=hs.JPEG,
    )
    assert detect is not None
    assert detect.status == 200, detect
    assert "detections" in detect.json()


def _body_error_names_a_field(doc: Any, status: int) -> None:
    if doc is not None and 400 <= status < 500 and status not in (404, 405):
        message = doc["error"]["message"]
        assert any(word in message for word in BODY_FIELDS), message


def test_any_body_and_content_type_is_answered_without_a_500(runtime: LiveRuntime) -> None:
    name = "detect: bodies x content types"

    @settings(SETTINGS, max_examples=400)
    @given(
        path=st.sampled_from([b"/v1/detect", b"/v1/detect/batch"]),
        body=hs.BODIES,
        content_type=hs.CONTENT_TYPES,
    )
    def prop(path: bytes, body: bytes, content_type: str) -> None:
        headers = [(b"Content-Type", content_type.encode("latin-1"))] if content_type else []
        response = rawhttp.request(runtime.port, "POST", path, headers=headers, body=body)
        doc = check(name, response)
        assert response is not None
        _body_error_names_a_field(doc, response.status)

    prop()
    assert_alive(runtime)


#: Where a frame's metadata field may come from: JSON body, query string or header.
_HEADERS = {
    "camera_id": b"X-Camera-Id",
    "timestamp": b"X-Timestamp",
    "deadline_ms": b"X-Deadline-Ms",
    "priority": b"X-Priority",
}


def test_garbage_in_one_metadata_field_is_a_400_naming_that_field(
    runtime: LiveRuntime,
) -> None:
    name = "detect: one metadata field"
    text_values = st.one_of(hs.PARAM_VALUES, hs.META_VALUES.map(lambda v: str(v).strip("@")))

    @settings(SETTINGS, max_examples=300)
    @given(
        field=st.sampled_from(sorted(_HEADERS)),
        where=st.sampled_from(["json", "batch", "query", "header"]),
        json_value=hs.META_VALUES,
        text_value=text_values,
        header_value=st.binary(max_size=40).map(lambda b: bytes(c for c in b if c not in b"\r\n")),
    )
    def prop(field: str, where: str, json_value: Any, text_value: str, header_value: bytes) -> None:
        path, headers, body = b"/v1/detect", [(b"Content-Type", b"image/jpeg")], hs.JPEG
        image = {"image": base64.b64encode(hs.JPEG).decode()}
        if where == "json":
            headers = [(b"Content-Type", b"application/json")]
            body = hs.dumps_with_raw({**image, field: json_value})
        elif where == "batch":
            path, headers = b"/v1/detect/batch", [(b"Content-Type", b"application/json")]
            frame = {**image, field: json_value} if field in ("camera_id", "timestamp") else image
            body = hs.dumps_with_raw({"frames": [frame], field: json_value})
        elif where == "query":
            path += b"?" + urllib.parse.urlencode({field: text_value}).encode()
        else:
            headers.append((_HEADERS[field], header_value))
        response = rawhttp.request(runtime.port, "POST", path, headers=headers, body=body)
        doc = check(name, response)
        assert response is not None
        if response.status == 400 and doc is None:
            assert where == "header"  # bytes aiohttp's HTTP parser refuses in a header
        elif response.status == 400:
            message = doc["error"]["message"]
            # The field, or the body as a whole when JSON itself cannot hold the value
            # (an integer of over 4300 digits).
            assert field in message or message.startswith("body is not valid JSON"), doc
        else:
            # Accepted, or a frame whose (valid, tiny) deadline passed.
            assert response.status in (200, 503), doc
        if response.status == 200 and where != "batch":
            assert doc["camera_id"] is None or isinstance(doc["camera_id"], str)

    prop()
    assert_alive(runtime)


def test_broken_framing_and_encodings_never_cost_a_500(runtime: LiveRuntime) -> None:
    name = "detect: framing, encodings, headers"

    @settings(SETTINGS, max_examples=200)
    @given(
        body=st.one_of(st.just(hs.JPEG), hs.corrupt_images(), st.binary(max_size=512)),
        length=st.sampled_from(["exact", "short", "long", "none", "negative", "junk", "huge"]),
        encoding=st.sampled_from([None, "gzip", "gzip-valid", "deflate", "br", "identity", "x"]),
        chunked=st.sampled_from([None, "valid", "broken"]),
        extra=st.lists(
            st.tuples(
                st.text(
                    st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters=":"),
                    min_size=1,
                    max_size=12,
                ),
                st.binary(max_size=30).map(lambda b: bytes(c for c in b if c not in b"\r\n")),
            ),
            max_size=4,
        ),
    )
    def prop(
        body: bytes,
        length: str,
        encoding: str | None,
        chunked: str | None,
        extra: list[tuple[str, bytes]],
    ) -> None:
        headers = [(b"Content-Type", b"image/jpeg")]
        headers += [(k.encode(), v) for k, v in extra]
        if encoding == "gzip-valid":
            body, encoding = gzip.compress(body), "gzip"
        if encoding is not None:
            headers.append((b"Content-Encoding", encoding.encode()))
        content_length: int | None = {
            "exact": -1,
            "short": max(len(body) - 7, 0),
            "long": len(body) + 100,
            "none": None,
            "negative": -5,
            "huge": MAX_BODY_BYTES * 10,
        }.get(length, -1)
        if length == "junk":
            content_length = None
            headers.append((b"Content-Length", b"12abc"))
        if chunked is not None:
            content_length = None
            headers.append((b"Transfer-Encoding", b"chunked"))
            body = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
            if chunked == "broken":
                body = b"zz\r\n" + body[3:]
        response = rawhttp.request(
            runtime.port,
            "POST",
            b"/v1/detect",
            headers=headers,
            body=body,
            content_length=content_length,
            half_close=length in ("long", "huge") or chunked == "broken",
        )
        broken = length != "exact" or chunked == "broken" or encoding not in (None, "identity")
        doc = check(name, response, may_close=broken)
        if response is not None:
            _body_error_names_a_field(doc, response.status)

    prop()
    assert_alive(runtime)


def test_any_counts_query_is_a_200_503_or_a_400_naming_the_parameter(
    runtime: LiveRuntime,
) -> None:
    name = "counts/latest: query parameters"

    @settings(SETTINGS, max_examples=400)
    @given(
        camera=st.one_of(st.just(CAMERA), st.text(min_size=1, max_size=20)),
        route=st.sampled_from(["counts", "latest"]),
        params=st.lists(st.tuples(hs.PARAM_NAMES, hs.PARAM_VALUES), max_size=4),
    )
    def prop(camera: str, route: str, params: list[tuple[str, str]]) -> None:
        target = f"/v1/cameras/{urllib.parse.quote(camera, safe='')}/{route}"
        if params:
            target += "?" + urllib.parse.urlencode(params)
        response = rawhttp.get(runtime.port, target)
        doc = check(name, response)
        assert response is not None
        if doc is None and response.status == 400:
            pass  # aiohttp's HTTP parser: a request line over its 8190-byte limit
        elif (
            response.status == 404
            and doc is not None
            and doc["error"]["reason"] == "unknown_camera"
        ):
            assert camera != CAMERA
        elif response.status == 400 and doc is not None:
            message = doc["error"]["message"]
            named = [p for p, _ in params] + ["from", "to", "interval"]
            assert any(p in message for p in named), (params, message)
        elif response.status == 503:
            assert doc["error"]["reason"] == "database_disabled", doc
        else:
            assert response.status in (200, 404), (response.status, doc)

    prop()
    assert_alive(runtime)


def test_probes_and_unknown_routes_answer_anything_without_a_500(runtime: LiveRuntime) -> None:
    name = "probes, metrics, unknown routes"

    @settings(SETTINGS, max_examples=200)
    @given(
        method=st.sampled_from(
            ["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "BREW"]
        ),
        path=st.one_of(
            st.sampled_from(
                ["/live", "/ready", "/metrics", "/v1/performance", "/v1/ownership", "/v1/detect"]
            ),
            st.text(max_size=30).map(lambda t: "/" + urllib.parse.quote(t)),
        ),
        query=st.lists(st.tuples(hs.PARAM_NAMES, hs.PARAM_VALUES), max_size=3),
        accept=st.sampled_from([b"*/*", b"application/json", b"text/html", b"\xff\xfe", b""]),
    )
    def prop(method: str, path: str, query: list[tuple[str, str]], accept: bytes) -> None:
        target = path + ("?" + urllib.parse.urlencode(query) if query else "")
        response = rawhttp.request(
            runtime.port, method, target.encode(), headers=[(b"Accept", accept)]
        )
        check(name, response)

    prop()
    assert_alive(runtime)

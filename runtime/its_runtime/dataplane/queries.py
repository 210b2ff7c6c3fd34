"""Query API over the data plane: per-camera counts and the latest analytics.

``GET /v1/cameras/{id}/counts?from=&to=&interval=`` and ``GET /v1/cameras/{id}/latest``.

Both are answered from the cache when it holds a fresh answer (``X-Cache: l1`` or
``l2``), else from PostgreSQL (``X-Cache: miss``), whose answer is then cached for the
configured TTL. Cached values are the response bodies themselves, so a hit costs no
query and no JSON encoding. ``/latest`` is normally a hit: the camera's pipeline
publishes its live view to the cache several times a second, under the key that
:func:`its_runtime.dataplane.publish.latest_key` spells for both; the database answer
(recent events) is the fallback for a camera this replica does not run, or one that
stalled.

Parameters are checked before any work; a bad one gets HTTP 400 naming it:
``from``/``to`` are ISO 8601 (a naive time is UTC) or epoch seconds; ``interval`` is
seconds, optionally with a unit (``90``, ``30s``, ``5m``, ``1h``, ``1d``), a multiple
of the stored 10-second buckets. The window is widened to whole intervals.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from its_runtime import problems
from its_runtime.dataplane import counts_body, publish
from its_runtime.dataplane.cache.tiered import TieredCache
from its_runtime.dataplane.store import queries, schema
from its_runtime.dataplane.store.database import Database

DEFAULT_INTERVAL_S = 60
DEFAULT_WINDOW_S = 3600
MAX_INTERVAL_S = 7 * 86400
MAX_BUCKETS = 10_000
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
#: At most 12 digits: ``int()`` of a longer one can exceed Python's 4300-digit limit.
_DURATION = re.compile(r"^\s*(\d{1,12})\s*([smhd]?)\s*$")


class CameraQueries:
    """Cache-first answers for the query API (usable without HTTP too)."""

    def __init__(
        self, *, cameras: Sequence[str], cache: TieredCache, database: Database | None
    ) -> None:
        self.cameras = set(cameras)
        self.cache = cache
        self.database = database

    def check_camera(self, camera: str) -> None:
        if camera not in self.cameras:
            raise problems.ApiError(404, "unknown_camera", f"camera {camera!r} is not configured")

    async def counts(
        self,
        camera: str,
        start: datetime.datetime,
        end: datetime.datetime,
        interval_s: int,
    ) -> tuple[bytes, str | None]:
        """The counts body for [start, end) widened to whole intervals, and the cache level."""
        start = queries.align(start, interval_s)
        end = queries.align(end, interval_s, up=True)
        key = f"counts:{camera}:{int(start.timestamp())}:{int(end.timestamp())}:{interval_s}"
        hit = await self.cache.get(key)
        if hit.value is not None:
            return hit.value, hit.level
        rows = await self._query(lambda conn: queries.counts(conn, camera, start, end, interval_s))
        body = json.dumps(
            counts_body.build(camera, start, end, interval_s, rows), separators=(",", ":")
        ).encode()
        await self.cache.set(key, body)
        return body, None

    async def latest(self, camera: str) -> tuple[bytes, str | None]:
        key = publish.latest_key(camera)
        hit = await self.cache.get(key)
        if hit.value is not None:
            return hit.value, hit.level
        events = await self._query(lambda conn: queries.latest_events(conn, camera))
        body = json.dumps(
            {
                "camera": camera,
                "source": "database",
                "updated_at": datetime.datetime.now(datetime.UTC).timestamp(),
                "recent_events": events,
            },
            separators=(",", ":"),
        ).encode()
        await self.cache.set(key, body)
        return body, None

    async def _query(self, run: Any) -> Any:
        if self.database is None:
            raise problems.ApiError(
                503, "database_disabled", "no database is configured for this runtime"
            )
        try:
            async with self.database.acquire() as conn:
                return await run(conn)
        except problems.ApiError:
            raise
        except Exception as exc:
            raise problems.ApiError(
                503,
                "database_unavailable",
                f"the database is unavailable and no cached answer is fresh: {type(exc).__name__}",
            ) from exc


# -- parameter parsing ------------------------------------------------------------------


def parse_time(name: str, value: str) -> datetime.datetime:
    text = value.strip()
    try:
        if re.fullmatch(r"-?\d+(\.\d+)?", text):
            return datetime.datetime.fromtimestamp(float(text), datetime.UTC)
        parsed = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, OverflowError, OSError):
        raise problems.bad_request(
            f"{name}: {value!r} is not an ISO 8601 time or epoch seconds"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)


def parse_interval(value: str) -> int:
    m = _DURATION.match(value)
    if m is None:
        raise problems.bad_request(
            f"interval: {value!r} is not a duration like 60, 30s, 5m, 1h or 1d"
        )
    seconds = int(m.group(1)) * _UNITS[m.group(2) or "s"]
    if seconds <= 0 or seconds % schema.BUCKET_SECONDS or seconds > MAX_INTERVAL_S:
        raise problems.bad_request(
            f"interval: must be a positive multiple of {schema.BUCKET_SECONDS}s "
            f"up to {MAX_INTERVAL_S}s, got {seconds}s"
        )
    return seconds


def parse_window(params: Any) -> tuple[datetime.datetime, datetime.datetime, int]:
    known = {"from", "to", "interval"}
    unknown = sorted(set(params) - known)
    if unknown:
        raise problems.bad_request(
            f"unknown query parameter(s) {', '.join(unknown)}; use from, to, interval"
        )
    interval = parse_interval(params["interval"]) if "interval" in params else DEFAULT_INTERVAL_S
    now = datetime.datetime.now(datetime.UTC)
    end = parse_time("to", params["to"]) if "to" in params else now
    try:
        start = (
            parse_time("from", params["from"])
            if "from" in params
            else end - datetime.timedelta(seconds=DEFAULT_WINDOW_S)
        )
    except OverflowError:
        raise problems.bad_request("to: too early to hold the default one-hour window") from None
    if start >= end:
        raise problems.bad_request("from: must be earlier than to")
    try:
        start = queries.align(start, interval)
        end = queries.align(end, interval, up=True)
    except OverflowError:  # widened to whole intervals past year 1 or 9999
        raise problems.bad_request(
            "from/to: the window widened to whole intervals leaves the calendar (years 1-9999)"
        ) from None
    buckets = int((end - start).total_seconds()) // interval
    if buckets > MAX_BUCKETS:
        raise problems.bad_request(
            f"interval: the window holds {buckets} intervals, more than {MAX_BUCKETS}; "
            "use a larger interval or a shorter window"
        )
    return start, end, interval


# -- routes -----------------------------------------------------------------------------

QUERIES = web.AppKey("its_camera_queries", CameraQueries)


def _respond(body: bytes, level: str | None) -> web.Response:
    return web.Response(
        body=body,
        content_type="application/json",
        headers={"X-Cache": level or "miss", "Cache-Control": "no-store"},
    )


async def counts_handler(request: web.Request) -> web.Response:
    service = request.app[QUERIES]
    camera = request.match_info["camera"]
    service.check_camera(camera)
    start, end, interval = parse_window(request.query)
    body, level = await service.counts(camera, start, end, interval)
    return _respond(body, level)


async def latest_handler(request: web.Request) -> web.Response:
    service = request.app[QUERIES]
    camera = request.match_info["camera"]
    service.check_camera(camera)
    if request.query:
        raise problems.bad_request(
            f"unknown query parameter(s) {', '.join(sorted(request.query))}; /latest takes none"
        )
    body, level = await service.latest(camera)
    return _respond(body, level)


def add_routes(app: web.Application, service: CameraQueries) -> None:
    app[QUERIES] = service
    app.router.add_get("/v1/cameras/{camera}/counts", counts_handler)
    app.router.add_get("/v1/cameras/{camera}/latest", latest_handler)

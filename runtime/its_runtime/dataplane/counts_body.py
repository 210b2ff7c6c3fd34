"""The JSON body of ``GET /v1/cameras/{id}/counts``: stored aggregates, per interval and total.

Each interval (and the window's ``totals``) holds:

* ``objects``: new tracked objects per class;
* ``crossings``: per line, lane ('' without lanes), direction and class, with the mean
  speed of the crossings whose speed is known;
* ``wrong_way``: crossings against a line's or lane's allowed direction, same keys;
* ``stopped_vehicles``: incidents per region and class;
* ``movements``: turning movements per origin, destination and class;
* ``queues``: per region, mean and maximum queued vehicles and queue length in metres
  over the interval's once-a-second samples;
* ``congestion``: seconds observed at each level (free, heavy, congested), and the
  mean level (0 free .. 2 congested).

Keys are sorted so equal data always gives the same body (the cache stores bodies).
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from typing import Any

from its_runtime.dataplane.store.queries import CountRow

_KEYED = {
    "crossing": ("crossings", ("line", "lane", "direction", "class_name")),
    "wrong_way": ("wrong_way", ("line", "lane", "direction", "class_name")),
    "stopped_vehicle": ("stopped_vehicles", ("region", "class_name")),
    "od": ("movements", ("region", "destination", "class_name")),
}
_NAMES = {"class_name": "class", "region": "region", "destination": "destination"}


class _Interval:
    """Accumulates the rows of one interval (or of the whole window)."""

    def __init__(self) -> None:
        self.objects: dict[str, int] = {}
        self.keyed: dict[str, dict[tuple[str, ...], list[float]]] = {
            k: {} for k, _ in _KEYED.values()
        }
        self.queues: dict[str, dict[str, list[float]]] = {}
        self.congestion: dict[str, int] = {}
        self.level: list[float] = [0.0, 0.0]

    def add(self, r: CountRow) -> None:
        if r.kind == "object":
            self.objects[r.class_name] = self.objects.get(r.class_name, 0) + r.n
        elif r.kind in _KEYED:
            section, fields = _KEYED[r.kind]
            key = tuple(getattr(r, f) for f in fields)
            acc = self.keyed[section].setdefault(key, [0, 0, 0.0])
            acc[0] += r.n
            acc[1] += r.valued
            acc[2] += r.total
        elif r.kind in ("queue", "queue_m"):
            unit = "vehicles" if r.kind == "queue" else "length_m"
            acc = self.queues.setdefault(r.region, {}).setdefault(unit, [0, 0.0, float("-inf")])
            acc[0] += r.valued
            acc[1] += r.total
            acc[2] = max(acc[2], r.peak if r.peak is not None else float("-inf"))
        elif r.kind == "congestion":
            self.congestion[r.class_name] = self.congestion.get(r.class_name, 0) + r.n
            self.level[0] += r.valued
            self.level[1] += r.total

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"objects": dict(sorted(self.objects.items()))}
        for kind, (section, fields) in _KEYED.items():
            items = []
            for key, (n, valued, total) in sorted(self.keyed[section].items()):
                item: dict[str, Any] = {
                    ("origin" if f == "region" and kind == "od" else _NAMES.get(f, f)): v
                    for f, v in zip(fields, key, strict=True)
                }
                item["count"] = int(n)
                if kind == "crossing":
                    item["mean_speed_kmh"] = round(total / valued, 2) if valued else None
                items.append(item)
            out[section] = items
        out["queues"] = {
            region: {
                f"{stat}_{unit}": value
                for unit, (n, total, peak) in sorted(units.items())
                for stat, value in (
                    ("mean", round(total / n, 3) if n else None),
                    ("max", round(peak, 3) if n else None),
                )
            }
            for region, units in sorted(self.queues.items())
        }
        seconds = sum(self.congestion.values())
        out["congestion"] = (
            {
                "seconds": dict(sorted(self.congestion.items())),
                "mean_level": round(self.level[1] / self.level[0], 3) if self.level[0] else None,
            }
            if seconds
            else {"seconds": {}, "mean_level": None}
        )
        return out


def build(
    camera: str,
    start: datetime.datetime,
    end: datetime.datetime,
    interval_s: int,
    rows: Iterable[CountRow],
) -> dict[str, Any]:
    buckets: dict[datetime.datetime, _Interval] = {}
    t = start
    step = datetime.timedelta(seconds=interval_s)
    while t < end:
        buckets[t] = _Interval()
        t += step
    totals = _Interval()
    for r in rows:
        bucket = buckets.get(r.start)
        if bucket is None:
            continue
        bucket.add(r)
        totals.add(r)
    return {
        "camera": camera,
        "from": start.isoformat(),
        "to": end.isoformat(),
        "interval_s": interval_s,
        "buckets": [{"start": t.isoformat(), **b.to_json()} for t, b in buckets.items()],
        "totals": totals.to_json(),
    }

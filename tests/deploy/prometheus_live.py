"""A private Prometheus server scraping live ``its-runtime`` processes, for the
monitoring manifests' live tests (``test_prometheus_live.py``).

* :class:`Prometheus` runs the ``prometheus`` binary on a free port with its own TSDB
  in a temporary directory, scraping each target every second with the labels the
  Prometheus Operator's ServiceMonitor gives a runtime pod's target (``namespace``,
  ``pod``, ``service``, ``container``, ``endpoint``, ``job``), and loads rule files;
  :meth:`Prometheus.query` is ``/api/v1/query``.
* :func:`render_metrics_query` expands a prometheus-adapter rule's ``metricsQuery``
  template the way the adapter does for a Pods metric of some pods in a namespace.
* :func:`histogram_quantile` is PromQL's ``histogram_quantile`` (Prometheus 2.x's
  ``bucketQuantile``) over plain bucket counts, so a p99 can be computed from the
  runtime's own ``/metrics`` and compared with what Prometheus answers.
"""

from __future__ import annotations

import contextlib
import json
import math
import pathlib
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from its_devenv import ports

MONITORING = pathlib.Path(__file__).resolve().parents[2] / "manifests" / "overlays" / "monitoring"

#: ``(sample name, sorted label pairs)`` -> value: one scrape of an exposition.
Scrape = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def adapter_rules() -> list[dict[str, Any]]:
    """The prometheus-adapter rules of ``prometheus-adapter.yaml`` (its ConfigMap)."""
    cm = yaml.safe_load((MONITORING / "prometheus-adapter.yaml").read_text())
    rules: list[dict[str, Any]] = yaml.safe_load(cm["data"]["config.yaml"])["rules"]
    return rules


def rule_groups() -> list[dict[str, Any]]:
    """``spec.groups`` of ``prometheusrule.yaml``: what the Prometheus Operator writes
    into the rules file it gives Prometheus."""
    doc = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
    groups: list[dict[str, Any]] = doc["spec"]["groups"]
    return groups


def keda_query() -> str:
    """The query of ``keda-scaledobject.yaml``'s Prometheus trigger."""
    doc = yaml.safe_load((MONITORING / "keda-scaledobject.yaml").read_text())
    (trigger,) = doc["spec"]["triggers"]
    query: str = trigger["metadata"]["query"]
    return query


def series_name(series_query: str) -> str:
    """The metric name a ``seriesQuery`` selects (``name{matchers}``)."""
    match = re.match(r"\s*([a-zA-Z_:][a-zA-Z0-9_:]*)", series_query)
    if match is None:
        raise ValueError(f"seriesQuery names no metric: {series_query!r}")
    return match.group(1)


def render_metrics_query(rule: Mapping[str, Any], namespace: str, pods: Sequence[str]) -> str:
    """``metricsQuery`` as prometheus-adapter sends it for the Pods metric of ``pods``.

    The adapter substitutes ``<<.Series>>`` with the series ``seriesQuery`` found,
    ``<<.LabelMatchers>>`` with the matchers of the resources the HPA asked about (the
    ``namespace`` and ``pod`` labels, per ``resources.overrides``) and ``<<.GroupBy>>``
    with the label of the resource the metric is read per (``pod``).
    """
    overrides = rule["resources"]["overrides"]
    label = {resource["resource"]: name for name, resource in overrides.items()}
    matchers = f'{label["namespace"]}="{namespace}",{label["pod"]}=~"{"|".join(pods)}"'
    query: str = rule["metricsQuery"]
    return (
        query.replace("<<.Series>>", series_name(rule["seriesQuery"]))
        .replace("<<.LabelMatchers>>", matchers)
        .replace("<<.GroupBy>>", label["pod"])
        .strip()
    )


def parse(text: str) -> Scrape:
    out: Scrape = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return out


def scrape(url: str) -> tuple[str, Scrape]:
    """``GET url`` (a ``/metrics``): the exposition's text and its parsed samples."""
    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    return text, parse(text)


def value(s: Scrape, name: str, **labels: str) -> float:
    return s.get((name, tuple(sorted(labels.items()))), 0.0)


def buckets(s: Scrape, name: str) -> dict[float, float]:
    """``{le: cumulative count}`` of an unlabelled histogram's ``name_bucket`` series."""
    return {float(dict(k[1])["le"]): v for k, v in s.items() if k[0] == f"{name}_bucket"}


def histogram_quantile(q: float, counts: Mapping[float, float]) -> float:
    """PromQL's ``histogram_quantile(q, ...)`` over ``{le: cumulative count}``:
    linear interpolation inside the bucket holding rank ``q * count``, the first
    bucket starting at 0, the ``+Inf`` bucket answered by the highest finite bound."""
    b = sorted(counts.items())
    if not b or not math.isinf(b[-1][0]):
        return math.nan
    for i in range(1, len(b)):  # ensureMonotonic
        if b[i][1] < b[i - 1][1]:
            b[i] = (b[i][0], b[i - 1][1])
    if len(b) < 2 or b[-1][1] == 0:
        return math.nan
    rank = q * b[-1][1]
    i = next((j for j in range(len(b) - 1) if b[j][1] >= rank), len(b) - 1)
    if i == len(b) - 1:
        return b[-2][0]
    if i == 0 and b[0][0] <= 0:
        return b[0][0]
    start, end, count = 0.0, b[i][0], b[i][1]
    if i > 0:
        start = b[i - 1][0]
        count -= b[i - 1][1]
        rank -= b[i - 1][1]
    return start + (end - start) * (rank / count)


def delta(after: Mapping[float, float], before: Mapping[float, float]) -> dict[float, float]:
    return {le: after[le] - before.get(le, 0.0) for le in after}


@dataclass(frozen=True)
class Target:
    """A runtime pod's ``/metrics`` and the target labels a ServiceMonitor gives it."""

    address: str
    namespace: str
    pod: str
    service: str

    def labels(self) -> dict[str, str]:
        # What the Prometheus Operator's relabelling of a ServiceMonitor endpoint sets
        # (the `metrics` port of the runtime Service the operator creates).
        return {
            "namespace": self.namespace,
            "pod": self.pod,
            "service": self.service,
            "container": "runtime",
            "endpoint": "metrics",
            "job": self.service,
        }


class PromError(RuntimeError):
    """Prometheus answered a query with an error (a bad expression, say)."""


class Prometheus:
    """A ``prometheus`` server of our own, scraping ``targets`` every second."""

    def __init__(self, workdir: pathlib.Path, targets: Sequence[Target], rule_files: Sequence[str]):
        exe = shutil.which("prometheus")
        if exe is None:
            raise FileNotFoundError("prometheus is not installed (devenv/install-deps.sh)")
        self.port = ports.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "prometheus.log"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": list(rule_files),
            "scrape_configs": [
                {
                    "job_name": "its-runtime",
                    "scrape_interval": "1s",
                    "scrape_timeout": "1s",
                    "metrics_path": "/metrics",
                    "static_configs": [
                        {"targets": [t.address], "labels": t.labels()} for t in targets
                    ],
                }
            ],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        argv = [
            exe,
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, cwd=workdir, start_new_session=True
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def _get(self, path: str, **params: str) -> Any:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                body = json.loads(r.read())
        except urllib.error.HTTPError as e:
            body = json.loads(e.read())
        if body.get("status") != "success":
            raise PromError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.proc.returncode}:\n{self.log()}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(self.url + "/-/ready", timeout=2) as r,
            ):
                if r.status == 200:
                    return
            time.sleep(0.2)
        raise TimeoutError(f"prometheus not ready after {timeout}s:\n{self.log()}")

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """``/api/v1/query``: the instant vector's samples (``metric``, ``value``)."""
        params = {"query": expr} if at is None else {"query": expr, "time": f"{at:.3f}"}
        data = self._get("/api/v1/query", **params)
        if data["resultType"] != "vector":
            raise PromError(f"{expr!r} is a {data['resultType']}, not an instant vector")
        result: list[dict[str, Any]] = data["result"]
        return result

    def by_pod(self, expr: str, at: float | None = None) -> dict[str, float]:
        """``pod`` label -> value of each sample; fails on two samples for one pod."""
        out: dict[str, float] = {}
        for sample in self.query(expr, at):
            pod = sample["metric"].get("pod", "")
            assert pod not in out, f"{expr!r} returned two samples for pod {pod!r}"
            out[pod] = float(sample["value"][1])
        return out

    def rules(self) -> list[dict[str, Any]]:
        groups: list[dict[str, Any]] = self._get("/api/v1/rules")["groups"]
        return groups

    def alerts(self) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = self._get("/api/v1/alerts")["alerts"]
        return alerts

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextlib.contextmanager
def running(
    workdir: pathlib.Path, targets: Sequence[Target], rule_files: Sequence[str]
) -> Iterator[Prometheus]:
    prom = Prometheus(workdir, targets, rule_files)
    try:
        prom.wait_ready()
        yield prom
    finally:
        prom.stop()


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    if exe is None:
        raise FileNotFoundError("promtool is not installed (devenv/install-deps.sh)")
    return subprocess.run(
        [exe, *args], input=stdin, capture_output=True, text=True, timeout=60, check=False
    )


def lint_metrics(exposition: str) -> str:
    """``promtool check metrics`` of an exposition: its complaints, "" when clean."""
    check = promtool("check", "metrics", stdin=exposition)
    problems = (check.stdout + check.stderr).strip()
    if check.returncode != 0 and not problems:
        problems = f"promtool check metrics exited {check.returncode}"
    return problems

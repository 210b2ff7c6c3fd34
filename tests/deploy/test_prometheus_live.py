"""The monitoring overlay's queries on a real Prometheus scraping live runtimes.

Two real ``its-runtime`` processes (the colour-box detector on the CPU, eager backend)
play two pods of the ``ring-road`` pipeline in ``its-demo`` (the KEDA sample's names);
a private ``prometheus`` scrapes both every second with the target labels a
ServiceMonitor gives them (``namespace``, ``pod``, ``service``, ...) and loads the
PrometheusRule's groups as its rules file. Both pods sit idle for a few scrapes, then
get HTTP frames at different rates and batching delays, then none.

Each prometheus-adapter ``metricsQuery``, rendered as the adapter renders it for an HPA
asking about both pods, must answer one sample per pod whose value is what the
runtime's own ``/metrics`` says over the same frames: the counters are zero at
Prometheus's first sample and frozen at its last, so ``rate()``'s extrapolation scales
every series of a pod alike and cancels out of means and quantiles. The KEDA query and
every alert expression are evaluated on the same series, and two alerts are provoked:
a too-tight SLO (compliance) and frames that stop (throughput).
"""

from __future__ import annotations

import concurrent.futures
import functools
import io
import os
import pathlib
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import yaml

from its_devenv import localrun, ports, procs
from tests.deploy import prometheus_live as pl

#: Starts three servers and runs them for about a minute.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

NAMESPACE, SERVICE = "its-demo", "ring-road"
INPUT_SHAPE = (3, 48, 80)
IDLE_SCRAPES = 3
LOAD_S = 15.0
#: The runtimes' performance window: throughput is judged over this many seconds.
WINDOW_S = 5.0
MIN_FPS = 4.0


@dataclass(frozen=True)
class PodSpec:
    name: str
    burst: int
    bursts_per_s: float
    queue_delay_ms: float
    slo_ms: float

    @property
    def fps(self) -> float:
        return self.burst * self.bursts_per_s


#: Pod a gets pairs of frames and an SLO no frame meets; pod b a third as many frames,
#: in bursts of six, so more of them wait (5 of 6 rather than 1 of 2).
PODS = (
    PodSpec(f"{SERVICE}-5d8c7b9f4-a1b2c", 2, 10.0, queue_delay_ms=5.0, slo_ms=0.5),
    PodSpec(f"{SERVICE}-5d8c7b9f4-d3e4f", 6, 1.0, queue_delay_ms=20.0, slo_ms=100.0),
)
NAMES = [p.name for p in PODS]


@dataclass
class Pod:
    spec: PodSpec
    url: str
    proc: subprocess.Popen[bytes]
    log_path: pathlib.Path
    idle: pl.Scrape = field(default_factory=dict)
    loaded: pl.Scrape = field(default_factory=dict)
    loaded_text: str = ""
    sent: int = 0

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def get(self, path: str) -> int:
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as r:
                return int(r.status)
        except urllib.error.HTTPError as e:
            return int(e.code)

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.spec.name} exited:\n{self.log()}")
        return self.get("/ready") == 200

    def scrape(self) -> tuple[str, pl.Scrape]:
        return pl.scrape(self.url + "/metrics")


@dataclass
class Live:
    prom: pl.Prometheus
    pods: dict[str, Pod]
    rules_file: pathlib.Path
    idle_at: float
    load_mid_at: float
    eval_at: float


def _write_runtime_config(path: pathlib.Path, model: pathlib.Path, spec: PodSpec) -> int:
    from its_runtime import config
    from its_runtime.kits import synth_detector

    port = ports.free_port()
    batching = config.BatchingConfig(
        max_batch_size=8, opt_batch_size=4, max_queue_delay_ms=spec.queue_delay_ms
    )
    cfg = config.RuntimeConfig(
        model=synth_detector.model_config(
            model, INPUT_SHAPE, 8, backend=config.Backend.EAGER, batching=batching
        ),
        slo=config.SloConfig(p99_latency_ms=spec.slo_ms, min_fps=MIN_FPS, window_s=WINDOW_S),
        engine_cache=config.EngineCacheConfig(dir=str(path.parent / "engines")),
        server=config.ServerConfig(host="127.0.0.1", port=port),
    )
    path.write_text(cfg.to_yaml())
    return port


def _frame() -> bytes:
    """A grey road with a red car, as the ``.npy`` body of ``POST /v1/detect``."""
    _, h, w = INPUT_SHAPE
    img = np.full((h, w, 3), 110, dtype=np.uint8)
    img[18:30, 20:44] = (220, 30, 30)
    buf = io.BytesIO()
    np.save(buf, img)
    return buf.getvalue()


def _post(url: str, body: bytes) -> None:
    req = urllib.request.Request(
        url + "/v1/detect", data=body, headers={"Content-Type": "application/x-npy"}
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        r.read()


def _send(pod: Pod, seconds: float, errors: list[str]) -> None:
    """POST bursts of frames to one pod at its rate for ``seconds``; record failures.

    The frames of a burst arrive together: the first goes to an idle engine at once,
    the others wait in the queue for its batch (the batcher never waits when idle)."""
    body, interval = _frame(), 1.0 / pod.spec.bursts_per_s
    with concurrent.futures.ThreadPoolExecutor(pod.spec.burst) as pool:
        start = next_at = time.monotonic()
        while next_at < start + seconds:
            futures = [pool.submit(_post, pod.url, body) for _ in range(pod.spec.burst)]
            for f in futures:
                try:
                    f.result()
                    pod.sent += 1
                except Exception as exc:
                    errors.append(f"{pod.spec.name}: {exc!r}")
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))


def _caught_up(prom: pl.Prometheus, pod: Pod, since: float) -> bool:
    """Prometheus holds a sample of ``pod`` taken after ``since`` with its final count."""
    frames = pl.value(pod.loaded, "its_frames_total")
    expr = f'timestamp(its_frames_total{{pod="{pod.spec.name}"}} == {frames})'
    return any(float(s["value"][1]) > since for s in prom.query(expr))


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    missing = [exe for exe in ("prometheus", "promtool") if shutil.which(exe) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed (devenv/install-deps.sh installs it)")
    from its_runtime.kits import synth_detector

    tmp = tmp_path_factory.mktemp("prometheus-live")
    model = synth_detector.export_synth_detector(tmp / "synth.pt2", INPUT_SHAPE, 8)
    rules_file = tmp / "rules.yaml"
    rules_file.write_text(yaml.safe_dump({"groups": pl.rule_groups()}, sort_keys=False))
    env = {
        **os.environ,
        "CUDA_VISIBLE_DEVICES": "",
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
    }
    pods: dict[str, Pod] = {}
    try:
        for spec in PODS:
            pod_dir = tmp / spec.name
            pod_dir.mkdir()
            port = _write_runtime_config(pod_dir / "runtime.yaml", model, spec)
            log_path = pod_dir / "runtime.log"
            with log_path.open("wb") as log:
                proc = subprocess.Popen(
                    localrun.runtime_argv(pod_dir / "runtime.yaml"),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                )
            pods[spec.name] = Pod(spec, f"http://127.0.0.1:{port}", proc, log_path)
        for pod in pods.values():
            procs.wait_for(f"{pod.spec.name} /ready", pod.ready, timeout=90, log=pod.log_path)
        targets = [
            pl.Target(p.url.removeprefix("http://"), NAMESPACE, p.spec.name, SERVICE)
            for p in pods.values()
        ]
        with pl.running(tmp, targets, [str(rules_file)]) as prom:
            procs.eventually(
                f"{IDLE_SCRAPES} scrapes of each pod",
                lambda: len(prom.query(f"count_over_time(up[1m]) >= {IDLE_SCRAPES}")) == len(PODS),
                timeout=30,
            )
            for pod in pods.values():
                _, pod.idle = pod.scrape()
            idle_at = time.time()
            errors: list[str] = []
            senders = [
                threading.Thread(target=_send, args=(pod, LOAD_S, errors), daemon=True)
                for pod in pods.values()
            ]
            for t in senders:
                t.start()
            time.sleep(LOAD_S * 0.7)
            load_mid_at = time.time()
            for t in senders:
                t.join(timeout=LOAD_S + 30)
            assert not errors, errors[:5]
            stopped_at = time.time()
            for pod in pods.values():
                pod.loaded_text, pod.loaded = pod.scrape()
            for pod in pods.values():
                procs.eventually(
                    f"Prometheus to scrape {pod.spec.name}'s last frame",
                    functools.partial(_caught_up, prom, pod, stopped_at),
                    timeout=15,
                )
            yield Live(prom, pods, rules_file, idle_at, load_mid_at, time.time())
    finally:
        for pod in pods.values():
            pod.proc.terminate()
        for pod in pods.values():
            try:
                pod.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pod.proc.kill()
                pod.proc.wait()


# -- what the runtime itself measured, from two scrapes of its /metrics ---------------


def _delta(pod: Pod, name: str) -> float:
    return pl.value(pod.loaded, name) - pl.value(pod.idle, name)


def _queue_ms(pods: list[Pod]) -> float:
    """Mean queue time (ms) over every frame of ``pods``."""
    total = sum(_delta(p, "its_queue_time_seconds_sum") for p in pods)
    return 1000 * total / sum(_delta(p, "its_queue_time_seconds_count") for p in pods)


def _latency_buckets(pods: list[Pod]) -> dict[float, float]:
    out: dict[float, float] = {}
    for p in pods:
        d = pl.delta(
            pl.buckets(p.loaded, "its_frame_latency_seconds"),
            pl.buckets(p.idle, "its_frame_latency_seconds"),
        )
        for le, n in d.items():
            out[le] = out.get(le, 0.0) + n
    return out


def _adapter_rule(name: str) -> dict[str, Any]:
    (rule,) = [r for r in pl.adapter_rules() if r["name"]["as"] == name]
    return rule


def _alert(name: str) -> dict[str, Any]:
    rules: list[dict[str, Any]] = [r for g in pl.rule_groups() for r in g["rules"]]
    (rule,) = [r for r in rules if r.get("alert") == name]
    return rule


def _adapter_query(name: str) -> str:
    return pl.render_metrics_query(_adapter_rule(name), NAMESPACE, NAMES)


# -- tests ------------------------------------------------------------------------------


def test_the_runtimes_served_frames_from_zero(live: Live) -> None:
    """The premise of the exact comparisons below, and that the pods differ."""
    for pod in live.pods.values():
        assert pl.value(pod.idle, "its_queue_time_seconds_count") == 0, pod.spec.name
        assert pl.value(pod.idle, "its_frame_latency_seconds_count") == 0, pod.spec.name
        frames = pl.value(pod.loaded, "its_frames_total")
        assert frames == pod.sent >= 0.8 * pod.spec.fps * LOAD_S, pod.spec.name
        assert _delta(pod, "its_queue_time_seconds_count") == frames
    a, b = (live.pods[n] for n in NAMES)
    print(f"mean queue time: {a.spec.name} {_queue_ms([a])} ms, {b.spec.name} {_queue_ms([b])} ms")
    assert _queue_ms([b]) > 1.3 * _queue_ms([a]) > 0


def test_queue_time_ms_is_the_pods_mean_queue_time(live: Live) -> None:
    query = _adapter_query("its_queue_time_ms")
    got = live.prom.by_pod(query, live.eval_at)
    want = {n: _queue_ms([live.pods[n]]) for n in NAMES}
    print(f"its_queue_time_ms: prometheus {got}, runtime {want}")
    assert set(got) == set(NAMES)
    for n in NAMES:
        assert got[n] == pytest.approx(want[n], rel=1e-6), n
    # An idle pod reads 0 (not NaN, not missing): the HPA can scale it down.
    assert live.prom.by_pod(query, live.idle_at) == dict.fromkeys(NAMES, 0.0)


def test_latency_p99_ms_is_the_pods_p99_from_its_histogram(live: Live) -> None:
    query = _adapter_query("its_latency_p99_ms")
    got = live.prom.by_pod(query, live.eval_at)
    want = {n: 1000 * pl.histogram_quantile(0.99, _latency_buckets([live.pods[n]])) for n in NAMES}
    print(f"its_latency_p99_ms: prometheus {got}, runtime {want}")
    assert set(got) == set(NAMES)
    for n in NAMES:
        # A real p99 (an idle executor sends a frame at once, so it need not wait the
        # pod's queue delay: only a non-zero value is asked of it)
        assert want[n] > 0, n
        assert got[n] == pytest.approx(want[n], rel=1e-6), n
    assert live.prom.by_pod(query, live.idle_at) == dict.fromkeys(NAMES, 0.0)


def test_gpu_utilization_percent_is_what_nvml_reported(live: Live) -> None:
    query = _adapter_query("its_gpu_utilization_percent")
    got = live.prom.by_pod(query, live.eval_at)
    for n in NAMES:
        pod = live.pods[n]
        ratios = [v for (name, _), v in pod.loaded.items() if name == "its_gpu_utilization_ratio"]
        if pl.value(pod.loaded, "its_gpu_telemetry_available") == 0:
            # No NVML (CPU-only): the runtime exports no utilisation, so the adapter's
            # seriesQuery finds nothing to publish for the pod (a GPU target needs GPUs).
            assert not ratios
            assert n not in got
        else:
            # A gauge NVML refreshes: the scrape next to eval_at, within a few points.
            assert got[n] == pytest.approx(100 * sum(ratios) / len(ratios), abs=10), n


def test_keda_query_is_the_mean_queue_time_over_the_services_frames(live: Live) -> None:
    query = pl.keda_query()
    assert f'namespace="{NAMESPACE}"' in query
    assert f'service="{SERVICE}"' in query
    (sample,) = live.prom.query(query, live.eval_at)
    got = float(sample["value"][1])
    pods = list(live.pods.values())
    want = _queue_ms(pods)
    per_pod = [_queue_ms([p]) for p in pods]
    print(f"KEDA query: prometheus {got}, runtime {want} (per pod {per_pod})")
    # The pods' samples are a scrape apart, so rate() extrapolates them a little
    # differently (at most a second in ~20 s): a few per cent, not an exact ratio.
    assert got == pytest.approx(want, rel=0.03)
    # Not a per-pod total (the trigger is metricType Value), nor a mean of pod means.
    assert got != pytest.approx(sum(per_pod), rel=0.03)
    assert got != pytest.approx(sum(per_pod) / len(per_pod), rel=0.03)


def test_rules_pass_promtool_and_every_rule_evaluates_on_live_series(live: Live) -> None:
    check = pl.promtool("check", "rules", str(live.rules_file))
    assert check.returncode == 0, check.stdout + check.stderr
    rules = [r for g in pl.rule_groups() for r in g["rules"]]
    loaded = [r for g in live.prom.rules() for r in g["rules"]]
    assert len(loaded) == len(rules)
    procs.eventually(
        "every loaded rule evaluated without error",
        lambda: all(r["health"] == "ok" for g in live.prom.rules() for r in g["rules"]),
        timeout=10,
    )
    for rule in rules:
        for at in (live.idle_at, live.eval_at):
            live.prom.query(rule["expr"], at)  # raises on a parse or evaluation error


def test_p99_recording_rule_and_alert_agree_with_the_runtimes_histograms(live: Live) -> None:
    (record,) = [r for g in pl.rule_groups() for r in g["rules"] if "record" in r]
    (sample,) = live.prom.query(record["expr"], live.eval_at)
    assert sample["metric"] == {"namespace": NAMESPACE, "service": SERVICE}
    want = pl.histogram_quantile(0.99, _latency_buckets(list(live.pods.values())))
    print(f"{record['record']}: prometheus {sample['value'][1]}, runtime {want}")
    # Summed over two pods whose samples are a scrape apart (see the KEDA query).
    assert float(sample["value"][1]) == pytest.approx(want, rel=0.03)
    recorded = procs.eventually(
        "the recording rule's series", lambda: live.prom.query(record["record"])
    )
    assert float(recorded[0]["value"][1]) == pytest.approx(want, rel=0.03)
    assert bool(live.prom.query(_alert("ItsFrameLatencyP99High")["expr"])) == (want > 0.1)


def _pending_or_firing(live: Live, name: str) -> set[str]:
    return {
        a["labels"].get("pod", "")
        for a in live.prom.alerts()
        if a["labels"]["alertname"] == name and a["state"] in ("pending", "firing")
    }


def test_engine_alerts_follow_the_runtimes_engine_counters(live: Live) -> None:
    for name, metric in (
        ("ItsEngineCacheBuildFailures", "its_engine_cache_build_failures_total"),
        ("ItsBackendFallback", "its_backend_fallbacks_taken"),
    ):
        got = live.prom.by_pod(_alert(name)["expr"], live.eval_at)
        want = {n: pl.value(live.pods[n].loaded, metric) for n in NAMES}
        print(f"{name}: prometheus {got}, runtime {metric} {want}")
        assert set(got) == {n for n, v in want.items() if v > 0}
        assert got == {n: v for n, v in want.items() if v > 0}


def test_sla_alert_names_the_pod_that_missed_its_slo_and_no_idle_pod(live: Live) -> None:
    expr = _alert("ItsSlaComplianceLow")["expr"]
    compliance = {n: pl.value(live.pods[n].loaded, "its_sla_compliance_ratio") for n in NAMES}
    got = live.prom.by_pod(expr, live.eval_at)
    print(f"ItsSlaComplianceLow: prometheus {got}, runtime compliance {compliance}")
    a, b = NAMES
    assert compliance[a] < 0.99 <= compliance[b]
    assert set(got) == {a}
    assert got[a] == pytest.approx(compliance[a])
    # Before any frame the runtime's compliance gauge reads 0 (prometheus_client's
    # initial value), but no frame missed the SLO: the alert must not name idle pods.
    idle = {n: pl.value(live.pods[n].idle, "its_sla_compliance_ratio") for n in NAMES}
    assert live.prom.by_pod(expr, live.idle_at) == {}, f"idle pods' compliance gauges: {idle}"
    procs.eventually(
        "ItsSlaComplianceLow pending for the pod that missed its SLO",
        lambda: _pending_or_firing(live, "ItsSlaComplianceLow") == {a},
        timeout=10,
    )


def test_throughput_alert_goes_pending_once_frames_stop(live: Live) -> None:
    name = "ItsFramesPerSecondBelowTarget"
    expr = _alert(name)["expr"]
    assert live.prom.by_pod(expr, live.idle_at) == {}
    assert live.prom.by_pod(expr, live.load_mid_at) == {}
    # No frames for a whole window: each runtime raises its own throughput alert...
    got = procs.eventually(
        f"{name}'s expression to name both pods",
        lambda: (lambda r: r if set(r) == set(NAMES) else None)(live.prom.by_pod(expr)),
        timeout=WINDOW_S + 20,
    )
    assert got == dict.fromkeys(NAMES, 1.0)
    for pod in live.pods.values():
        _, now = pod.scrape()
        assert pl.value(now, "its_alert_active", alert="throughput") == 1
        assert pl.value(now, "its_frames_per_second") < MIN_FPS
    # ...and Prometheus holds the alert (pending for its `for`).
    procs.eventually(
        f"{name} pending for both pods",
        lambda: _pending_or_firing(live, name) == set(NAMES),
        timeout=10,
    )


def test_promtool_check_metrics_is_clean_on_live_scrapes(live: Live) -> None:
    for pod in live.pods.values():
        assert pl.lint_metrics(pod.loaded_text) == "", pod.spec.name
    # The operator's /metrics: its own registry (prometheus_client's default one) as a
    # fresh operator process exposes it, rendered without a cluster to reconcile.
    operator = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, prometheus_client, its_operator.main; "
            "sys.stdout.write(prometheus_client.generate_latest().decode())",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "its_operator_reconcile_duration_seconds_bucket" in operator, operator[:500]
    assert pl.lint_metrics(operator) == ""

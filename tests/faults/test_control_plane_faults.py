"""The fault suite's control-plane scenarios, short variants: the operator killed -9
mid-reconcile, the leader of two replicas killed -9, kube-apiserver and etcd killed
-9 and restarted. None loses or duplicates a pipeline's children, and each recovers
in bounded time.

Each scenario starts its own private control plane (``its_devenv.private_cluster``),
so the shared dev cluster is never stopped. ``benchmarks/faults.py`` runs the same
functions with 50 pipelines and 30 s outages.
"""

from __future__ import annotations

import pytest

from tests.faults import control_plane

#: Each starts a private control plane (the dev cluster's binaries) and operators.
pytestmark = [pytest.mark.faults, pytest.mark.cluster, pytest.mark.slow]


@pytest.mark.timeout(300)
async def test_operator_killed_mid_reconcile_converges_without_duplicates() -> None:
    outcome = await control_plane.operator_kill_mid_reconcile(pipelines=20)
    print(outcome.line())
    assert outcome.details["ready_at_kill"] < 20  # it really was killed mid-way
    assert outcome.lost == 0
    assert outcome.duplicated == 0
    assert outcome.details["deployments"] == 20
    assert outcome.recovery_s < 30


@pytest.mark.timeout(300)
async def test_leader_killed_standby_takes_over_within_15s_without_two_writers() -> None:
    outcome = await control_plane.leader_kill_two_replicas(pipelines=20)
    print(outcome.line())
    assert outcome.details["ready_at_kill"] < 20
    assert outcome.details["takeover_s"] < 15
    assert outcome.details["interleaved_runs"] == 0, outcome.details["writer_runs"]
    assert outcome.details["writes_by_standby"] > 0
    assert outcome.lost == 0
    assert outcome.duplicated == 0
    assert outcome.recovery_s < 45


@pytest.mark.timeout(300)
async def test_apiserver_restart_operator_reconnects_its_watches_without_restarting() -> None:
    outcome = await control_plane.apiserver_restart(down_s=10, pipelines=10)
    print(outcome.line())
    assert outcome.details["operator_same_process"] is True
    assert outcome.lost == 0  # spec changes, new pipelines and the deleted child all seen
    assert outcome.duplicated == 0
    # The watches are back within seconds of the API server, not after kopf's default
    # retry backoff (1, 1, 2, 3, 5, 8, 13, 21 s: ~8 s after a 10 s outage). Bound: the
    # Lease, lost during the outage, is taken back at the next 2 s retry; the watches'
    # next try comes within 2 s.
    assert outcome.details["first_changed_reconciled_s"] < 6
    assert outcome.details["operator_applied_all_s"] < 10
    # The rest is kube-controller-manager's: its informers return ~15-25 s after the
    # API server does, and only then do the changed Deployments roll out.
    assert outcome.recovery_s < 90


@pytest.mark.timeout(300)
async def test_etcd_restart_operator_converges_without_restarting() -> None:
    outcome = await control_plane.etcd_restart(down_s=10, pipelines=10)
    print(outcome.line())
    assert outcome.details["operator_same_process"] is True
    assert outcome.lost == 0
    assert outcome.duplicated == 0
    # etcd's return is not the operator's: requests hung on etcd (the Lease's, up to
    # the 8 s renew deadline) finish first, then the Lease is taken back.
    assert outcome.details["first_changed_reconciled_s"] < 10
    assert outcome.details["operator_applied_all_s"] < 15
    assert outcome.recovery_s < 60

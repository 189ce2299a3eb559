"""The soak window of a rollout: judging the pods' /metrics (builders.analysis), the window's
rules (builders.rollout, build_status) and the cluster controller reading real metrics text
from a fake scraper on the in-memory fake of the Kubernetes API, with a clock it controls."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import pytest

from dchat_operator.api.kinds import CLUSTER, DEPLOYMENT, POD, SECRET
from dchat_operator.api.models import DchatCluster, RolloutAnalysis
from dchat_operator.builders.analysis import Sample, Scrape, check, parse, quantile
from dchat_operator.builders.common import condition, selector_labels
from dchat_operator.builders.rollout import next_check_in, soak_step
from dchat_operator.builders.status import Observed, build_status, soak_check_due
from dchat_operator.builders.workload import deployment
from dchat_operator.clients.podmetrics import ScrapeError
from dchat_operator.controllers.cluster import ClusterController, ClusterState
from dchat_operator.controllers.engine import Backoff, Engine
from tests.operator.unit.fake_kube import FakeKube
from tests.operator.unit.test_cluster_controller import NS, PG, World
from tests.operator.unit.test_rollout import set_version

pytestmark = pytest.mark.unit

BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def metrics(ok: int, errors: int = 0, slow: int = 0, slow_le: float = 2.5) -> str:
    """What a node's /metrics holds after ``ok`` fast 200s, ``errors`` fast 503s and ``slow``
    200s that took up to ``slow_le`` s (the node's own metric names and labels)."""
    lines = [
        "# HELP dchat_http_requests_total HTTP requests served by the API.",
        "# TYPE dchat_http_requests_total counter",
        f'dchat_http_requests_total{{method="GET",route="/api/v1/channels",status="200"}} '
        f"{ok + slow}.0",
        f'dchat_http_requests_total{{method="POST",route="/api/v1/messages",status="503"}} '
        f"{errors}.0",
        "# HELP dchat_http_request_duration_seconds HTTP request latency.",
        "# TYPE dchat_http_request_duration_seconds histogram",
    ]
    for status, fast, slower in (("200", ok, slow), ("503", errors, 0)):
        for le in (*BOUNDS, float("inf")):
            n = fast + (slower if le >= slow_le else 0)
            label = "+Inf" if le == float("inf") else repr(le)
            lines.append(
                f'dchat_http_request_duration_seconds_bucket{{le="{label}",method="GET",'
                f'route="/x",status="{status}"}} {n}.0'
            )
        lines.append(
            f'dchat_http_request_duration_seconds_count{{method="GET",route="/x",'
            f'status="{status}"}} {fast + slower}.0'
        )
    return "\n".join(lines) + "\n"


ANALYSIS = RolloutAnalysis.model_validate(
    {"soakSeconds": 60, "intervalSeconds": 10, "minRequests": 20, "failureLimit": 2}
)


# --- builders.analysis ----------------------------------------------------------------------


def test_parse_sums_routes_and_counts_5xx() -> None:
    sample = parse(metrics(ok=90, errors=10))
    assert (sample.requests, sample.errors) == (100.0, 10.0)
    assert sample.buckets[float("inf")] == 100.0
    assert sample.buckets[0.005] == 100.0


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("<html>hello</html>", "not Prometheus text"),
        ("# TYPE other_total counter\nother_total 3\n", "no dchat_http_requests_total"),
    ],
)
def test_what_is_not_a_nodes_metrics_fails_the_check(text: str, why: str) -> None:
    found, samples = check(ANALYSIS, [Scrape("p1", text)], {}, "t")
    assert found["passed"] is False
    assert why in found["message"]
    assert samples == {}


def test_quantile_interpolates_inside_the_bucket_like_prometheus() -> None:
    # 100 requests: 50 up to 0.1 s, 50 more up to 0.5 s -> p99 at 0.99*100 = 99th: in (0.1, 0.5]
    buckets = {0.1: 50.0, 0.5: 100.0, float("inf"): 100.0}
    assert quantile(0.99, buckets) == pytest.approx(0.1 + 0.4 * 49 / 50)
    assert quantile(0.5, buckets) == pytest.approx(0.1)
    # beyond the largest finite bound: that bound
    assert quantile(0.99, {0.1: 10.0, float("inf"): 100.0}) == pytest.approx(0.1)
    assert quantile(0.99, {float("inf"): 0.0}) is None


def test_a_check_judges_what_was_served_since_the_previous_one() -> None:
    first, samples = check(ANALYSIS, [Scrape("p1", metrics(ok=100, errors=50))], {}, "t1")
    assert first["passed"] is False
    assert first["errorRatio"] == "0.3333"
    assert "50 of 150 requests answered 5xx" in first["message"]
    # since then: 100 more 200s, no more errors -> passes
    second, samples = check(ANALYSIS, [Scrape("p1", metrics(ok=200, errors=50))], samples, "t2")
    assert second["passed"] is True, second
    assert (second["requests"], second["errorRatio"]) == (100, "0.0000")
    # a container restart (counters back near zero): counts from zero again
    third, _ = check(ANALYSIS, [Scrape("p1", metrics(ok=30, errors=0))], samples, "t3")
    assert (third["passed"], third["requests"]) == (True, 30)


def test_slow_requests_fail_on_p99_and_few_requests_judge_nothing() -> None:
    slow, _ = check(ANALYSIS, [Scrape("p1", metrics(ok=50, slow=50, slow_le=2.5))], {}, "t")
    assert slow["passed"] is False
    assert float(slow["p99Ms"]) > 1000
    assert "p99 latency" in slow["message"]
    few, _ = check(ANALYSIS, [Scrape("p1", metrics(ok=1, errors=5))], {}, "t")
    assert few["passed"] is True
    assert "fewer than minRequests" in few["message"]


def test_several_pods_add_up_and_an_unreadable_pod_fails_the_check() -> None:
    both, _ = check(
        ANALYSIS,
        [Scrape("p1", metrics(ok=100)), Scrape("p2", metrics(ok=95, errors=5))],
        {},
        "t",
    )
    assert (both["pods"], both["requests"], both["errorRatio"]) == (2, 200, "0.0250")
    assert both["passed"] is False  # 2.5 % > 1 %
    one_down, samples = check(
        ANALYSIS, [Scrape("p1", metrics(ok=100)), Scrape("p2", error="timed out")], {}, "t"
    )
    assert one_down["passed"] is False
    assert "p2: timed out" in one_down["message"]
    assert set(samples) == {"p1"}
    none, _ = check(ANALYSIS, [], {}, "t")
    assert none["passed"] is False
    assert "no Ready pod" in none["message"]


def test_sample_minus_restarted_counter() -> None:
    later = Sample(10, 1, {float("inf"): 10})
    assert later.minus(Sample(20, 0, {})) is later


# --- the window's rules ---------------------------------------------------------------------


def _at(generation: int, version: str, **rollout: Any) -> DchatCluster:
    analysis = {"soakSeconds": 60, "intervalSeconds": 10, "failureLimit": 2, **rollout}
    return DchatCluster.parse(
        {
            "metadata": {"name": "c1", "namespace": "ns1", "uid": "u", "generation": generation},
            "spec": {"version": version, "replicas": 1, "rollout": {"analysis": analysis}},
        }
    )


def _complete(generation: int = 5) -> dict[str, Any]:
    return {
        "metadata": {"generation": generation},
        "spec": {"replicas": 1},
        "status": {
            "observedGeneration": generation,
            "replicas": 1,
            "readyReplicas": 1,
            "updatedReplicas": 1,
            "availableReplicas": 1,
        },
    }


def _t(seconds: int) -> str:
    return (
        dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC) + dt.timedelta(seconds=seconds)
    ).strftime("%Y-%m-%dT%H:%M:%SZ")


PASS = {"at": "", "passed": True, "pods": 1, "requests": 100}
FAIL = {"at": "", "passed": False, "pods": 1, "requests": 100, "message": "error ratio 0.5"}


def _check(base: dict[str, Any], seconds: int) -> dict[str, Any]:
    return {**base, "at": _t(seconds)}


def test_a_revision_is_good_only_after_its_soak_window_passes() -> None:
    first = _at(2, "0.1.0")
    s0 = build_status(first, Observed(deployment=_complete(), check=_check(PASS, 0)), None, _t(0))
    assert "lastGoodRevision" not in s0
    assert s0["soak"]["checks"] == 1
    progressing = condition(s0, "Progressing")
    assert progressing is not None
    assert progressing["reason"] == "Soaking"
    ready = condition(s0, "Ready")
    assert ready is not None
    assert ready["status"] == "True"  # the pods serve meanwhile
    assert next_check_in(first, s0["soak"], _t(3)) == 7
    # no check due yet: nothing read, nothing changes
    assert not soak_check_due(first, _complete(), s0, _t(3))
    assert soak_check_due(first, _complete(), s0, _t(10))
    s1 = s0
    for at in range(10, 60, 10):
        s1 = build_status(
            first, Observed(deployment=_complete(), check=_check(PASS, at)), s1, _t(at)
        )
        assert "lastGoodRevision" not in s1
    # the last check of the window falls on its end, not an interval later
    assert next_check_in(first, s1["soak"], _t(55)) == 5
    done = build_status(first, Observed(deployment=_complete(), check=_check(PASS, 60)), s1, _t(60))
    assert done["lastGoodRevision"]["generation"] == 2
    assert "soak" not in done
    assert done["rolloutHistory"][-1]["result"] == "Completed"
    assert not soak_check_due(first, _complete(), done, _t(100))


def test_failed_checks_roll_the_revision_back_to_the_last_good_one() -> None:
    good = _at(2, "0.1.0", soakSeconds=0)
    before = build_status(good, Observed(deployment=_complete()), None, _t(0))
    assert before["lastGoodRevision"]["generation"] == 2  # no window asked for then
    bad = _at(3, "0.2.0")
    s1 = build_status(bad, Observed(deployment=_complete(), check=_check(FAIL, 10)), before, _t(10))
    assert s1["soak"]["failedChecks"] == 1
    assert "rollback" not in s1
    s2 = build_status(bad, Observed(deployment=_complete(), check=_check(FAIL, 20)), s1, _t(20))
    rollback = s2["rollback"]
    assert (rollback["fromVersion"], rollback["toVersion"]) == ("0.2.0", "0.1.0")
    assert rollback["reason"].startswith("soak window failed 2 of 2 checks: error ratio 0.5")
    degraded = condition(s2, "Degraded")
    assert degraded is not None
    assert degraded["reason"] == "RolledBack"
    assert "soak" not in s2
    assert s2["rolloutHistory"][-1]["result"] == "RolledBack"
    assert s2["lastGoodRevision"] == before["lastGoodRevision"]
    assert not soak_check_due(bad, _complete(), s2, _t(40))


def test_a_failed_window_without_an_earlier_revision_is_degraded_not_rolled_back() -> None:
    first = _at(2, "0.1.0", failureLimit=1)
    s1 = build_status(first, Observed(deployment=_complete(), check=_check(FAIL, 0)), None, _t(0))
    assert "rollback" not in s1
    degraded = condition(s1, "Degraded")
    assert degraded is not None
    assert degraded["reason"] == "AnalysisFailed"
    assert "no earlier good revision" in degraded["message"]
    assert not soak_check_due(first, _complete(), s1, _t(100))  # no more checks


def test_scaling_alone_is_not_soaked() -> None:
    good = _at(2, "0.1.0")
    passed = build_status(
        good, Observed(deployment=_complete(), check=_check(PASS, 0)), None, _t(0)
    )
    _window, verdict = soak_step(good, passed["soak"], _check(PASS, 60), _t(60))
    assert verdict == "Passed"
    done = build_status(
        good, Observed(deployment=_complete(), check=_check(PASS, 60)), passed, _t(60)
    )
    scaled = DchatCluster.parse(
        {
            "metadata": {"name": "c1", "namespace": "ns1", "uid": "u", "generation": 3},
            "spec": {**good.spec.model_dump(mode="json", by_alias=True), "replicas": 1},
        }
    )
    assert not soak_check_due(scaled, _complete(), done, _t(61))
    after = build_status(scaled, Observed(deployment=_complete()), done, _t(61))
    assert "soak" not in after


def test_pause_sets_the_deployments_own_pause_and_the_status_says_so() -> None:
    paused = DchatCluster.parse(
        {
            "metadata": {"name": "c1", "namespace": "ns1", "uid": "u", "generation": 3},
            "spec": {"version": "0.2.0", "replicas": 1, "rollout": {"paused": True}},
        }
    )
    assert deployment(paused)["spec"]["paused"] is True
    running = DchatCluster.parse(
        {"metadata": {"name": "c1", "namespace": "ns1", "uid": "u", "generation": 4}, "spec": {}}
    )
    assert "paused" not in deployment(running)["spec"]  # unset, so SSA drops our true
    half = _complete(5)
    half["status"]["updatedReplicas"] = 0
    status = build_status(paused, Observed(deployment=half), None, _t(0))
    progressing = condition(status, "Progressing")
    assert progressing is not None
    assert progressing["reason"] == "Paused"
    ready = condition(status, "Ready")
    assert ready is not None
    assert ready["status"] == "True"  # the old pods serve


# --- the controller -------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


class Pods:
    """What each pod's /metrics answers (by pod IP)."""

    def __init__(self) -> None:
        self.text: dict[str, str] = {}
        self.scrapes = 0

    async def scrape(self, ip: str, port: int) -> str:
        self.scrapes += 1
        assert port == 9001
        if ip not in self.text:
            raise ScrapeError("connection refused")
        return self.text[ip]


@pytest.fixture
async def soak_world() -> AsyncIterator[tuple[World, Clock, Pods]]:
    kube = FakeKube()
    kube.put(
        SECRET,
        {"metadata": {"name": "db", "namespace": NS}, "data": {"url": "cG9zdGdyZXNxbDovL3g="}},
    )
    clock, pods = Clock(), Pods()
    controller = ClusterController(kube, clock=clock, scrape=pods.scrape)
    engine: Engine[ClusterState] = Engine(
        controller, workers=2, backoff=Backoff(base=0.02, cap=0.1, jitter=0.0)
    )
    engine.start()
    yield World(kube, controller, engine), clock, pods
    await engine.stop()


def _pod(world: World, name: str, ip: str) -> None:
    body = world.kube.obj(CLUSTER, NS, "c1")
    assert body is not None
    labels = selector_labels(DchatCluster.parse(body))
    world.kube.put(
        POD,
        {
            "metadata": {"name": name, "namespace": NS, "labels": labels},
            "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": "True"}]},
        },
    )


async def _soak_a_good_version(world: World, clock: Clock, pods: Pods) -> None:
    analysis = {"soakSeconds": 30, "intervalSeconds": 10, "failureLimit": 2, "minRequests": 10}
    world.add("c1", replicas=1, database=PG, version="0.1.0", rollout={"analysis": analysis})
    await world.idle()
    _pod(world, "c1-a", "10.0.0.1")
    pods.text["10.0.0.1"] = metrics(ok=100)
    world.roll_out("c1")
    await world.idle()
    status = world.status("c1")
    assert status["soak"]["checks"] == 1, status
    assert "lastGoodRevision" not in status
    # the window runs on the controller's own requeue, one interval later (real seconds on
    # the engine's timer; here the test moves the controller's clock and wakes the key)
    key = (NS, "c1")
    for step in (10, 20, 30):
        due = world.engine.keys[key].due
        assert due is not None
        assert 8 < due - world.engine._clock() <= 10
        clock.now += dt.timedelta(seconds=10)
        pods.text["10.0.0.1"] = metrics(ok=100 + step * 10)
        world.engine.trigger(key, "requeue")
        await world.idle()
    status = world.status("c1")
    assert status["lastGoodRevision"]["version"] == "0.1.0", status.get("soak")
    assert "soak" not in status


async def test_the_controller_soaks_a_new_version_and_rolls_it_back_on_its_5xx(
    soak_world: tuple[World, Clock, Pods],
) -> None:
    world, clock, pods = soak_world
    key = (NS, "c1")
    await _soak_a_good_version(world, clock, pods)
    good_image = world.kube.obj(DEPLOYMENT, NS, "c1")["spec"]["template"]["spec"]["containers"][  # type: ignore[index]
        0
    ]["image"]

    await set_version(world, "c1", "0.2.0")
    world.kube.objects.pop((POD.plural, NS, "c1-a"))
    _pod(world, "c1-b", "10.0.0.2")
    pods.text["10.0.0.2"] = metrics(ok=50, errors=50)  # Ready, but half its answers are 503
    world.roll_out("c1")
    await world.idle()
    assert world.status("c1")["soak"]["failedChecks"] == 1
    clock.now += dt.timedelta(seconds=10)
    pods.text["10.0.0.2"] = metrics(ok=100, errors=100)
    world.engine.trigger(key, "requeue")
    await world.idle()
    await asyncio.sleep(0.3)  # the requeue that applies the good revision
    await world.idle()
    status = world.status("c1")
    assert status["rollback"]["fromVersion"] == "0.2.0", status
    assert "error ratio 0.5000" in status["rollback"]["reason"]
    assert world.condition("c1", "Degraded")["reason"] == "RolledBack"
    dep = world.kube.obj(DEPLOYMENT, NS, "c1")
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == good_image  # type: ignore[index]
    # no more checks, no more writes while the rollback holds
    world.roll_out("c1")
    await world.idle()
    scrapes, writes = pods.scrapes, len(world.kube.writes())
    clock.now += dt.timedelta(seconds=60)
    for _ in range(2):
        world.engine.resync()
        await world.idle()
    assert pods.scrapes == scrapes
    assert len(world.kube.writes()) == writes


def test_a_change_of_the_rollout_policy_alone_is_not_soaked() -> None:
    good = _at(2, "0.1.0", soakSeconds=0)
    done = build_status(good, Observed(deployment=_complete()), None, _t(0))
    tuned = _at(3, "0.1.0", soakSeconds=120, maxErrorRatio=0.05)
    assert not soak_check_due(tuned, _complete(), done, _t(1))
    assert soak_check_due(_at(3, "0.2.0"), _complete(), done, _t(1))


async def test_a_restarted_operator_goes_on_with_the_soak_window_from_the_status(
    soak_world: tuple[World, Clock, Pods],
) -> None:
    """The operator killed mid-window: a new process (no memory) keeps the window's start
    and counts from status.soak and counts each pod from its start (no earlier sample)."""
    world, clock, pods = soak_world
    analysis = {"soakSeconds": 30, "intervalSeconds": 10, "failureLimit": 2, "minRequests": 10}
    world.add("c1", replicas=1, database=PG, version="0.1.0", rollout={"analysis": analysis})
    await world.idle()
    _pod(world, "c1-a", "10.0.0.1")
    pods.text["10.0.0.1"] = metrics(ok=50, errors=50)  # one failed check so far
    world.roll_out("c1")
    await world.idle()
    before = world.status("c1")["soak"]
    assert (before["checks"], before["failedChecks"]) == (1, 1)

    await world.engine.stop()  # the old operator is gone; a new one starts from scratch
    controller = ClusterController(world.kube, clock=clock, scrape=pods.scrape)
    engine: Engine[ClusterState] = Engine(
        controller, workers=2, backoff=Backoff(base=0.02, cap=0.1, jitter=0.0)
    )
    engine.start()
    try:
        clock.now += dt.timedelta(seconds=10)
        pods.text["10.0.0.1"] = metrics(ok=500, errors=50)  # since its start: 9 % errors
        body = world.kube.obj(CLUSTER, NS, "c1")
        assert body is not None
        controller.cluster_event(engine, "ADDED", body)  # the new process's first list
        await asyncio.sleep(0)
        await engine.wait_idle()
        after = world.status("c1")
        soak = after.get("soak") or {}
        assert soak.get("startedAt") == before["startedAt"], after
        assert (soak.get("checks"), soak.get("failedChecks")) == (2, 2), after
        # a second failure reaches the limit: the revision has no earlier one to go back to
        degraded = next(c for c in after["conditions"] if c["type"] == "Degraded")
        assert degraded["reason"] == "AnalysisFailed", degraded
    finally:
        await engine.stop()

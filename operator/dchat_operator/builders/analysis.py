"""One check of a rollout's soak window, from the text of the new pods' own ``/metrics``.

Design (pure: the controller scrapes, this judges):
- A pod's sample is what its counters hold: API requests by status class
  (``dchat_http_requests_total``) and the request-latency histogram
  (``dchat_http_request_duration_seconds``), each summed over routes and methods.
- A check looks at what the pods served since the previous check: the difference to the
  sample the controller kept from then; a pod without one (new, or the operator restarted)
  counts from its start, which for the pods of a new revision is the revision's whole life;
  a counter that went down (the container restarted) counts from zero again.
- The p99 is interpolated inside the histogram bucket that holds it, as Prometheus's
  ``histogram_quantile`` does; a p99 beyond the largest finite bucket is that bucket's bound.
- Fewer requests than ``minRequests`` judge nothing (too few to tell); a pod whose metrics
  could not be read fails the check: the operator cannot vouch for it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from dchat_operator.api.models import RolloutAnalysis
from dchat_operator.builders.common import Obj

REQUESTS = "dchat_http_requests"
DURATION = "dchat_http_request_duration_seconds"


@dataclass(frozen=True)
class Sample:
    """A pod's request counters at one moment."""

    requests: float = 0.0
    errors: float = 0.0
    buckets: Mapping[float, float] = field(default_factory=dict)
    """Cumulative count per upper bound (``le``), +Inf included."""

    def minus(self, earlier: Sample | None) -> Sample:
        """What was served since ``earlier``; everything when there is none or the counters
        went back (a restarted container)."""
        if earlier is None or self.requests < earlier.requests or self.errors < earlier.errors:
            return self
        return Sample(
            self.requests - earlier.requests,
            self.errors - earlier.errors,
            {le: n - earlier.buckets.get(le, 0.0) for le, n in self.buckets.items()},
        )


class MetricsError(ValueError):
    """The text is not Prometheus exposition of a dchat node."""


def parse(text: str) -> Sample:
    """The request counters in a node's ``/metrics`` text."""
    try:
        families = {f.name: f for f in text_string_to_metric_families(text)}
    except (ValueError, IndexError, KeyError) as exc:
        raise MetricsError(f"not Prometheus text: {exc}") from exc
    if REQUESTS not in families:
        raise MetricsError(f"no {REQUESTS}_total in the metrics: not a dchat node?")
    requests = errors = 0.0
    for s in families[REQUESTS].samples:
        if s.name == REQUESTS + "_total":
            requests += s.value
            errors += s.value if str(s.labels.get("status", "")).startswith("5") else 0.0
    buckets: dict[float, float] = {}
    for s in families[DURATION].samples if DURATION in families else []:
        if s.name == DURATION + "_bucket":
            le = float(s.labels.get("le", "+Inf"))
            buckets[le] = buckets.get(le, 0.0) + s.value
    return Sample(requests, errors, buckets)


def quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """The ``q`` quantile of cumulative ``buckets`` (None when they hold nothing)."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    total = buckets[bounds[-1]]
    rank = q * total
    lower, below = 0.0, 0.0
    for le in bounds:
        count = buckets[le]
        if count >= rank:
            if math.isinf(le):
                return lower  # the largest finite bound, as Prometheus
            if count == below:
                return le
            return lower + (le - lower) * (rank - below) / (count - below)
        lower, below = le, count
    return lower


@dataclass(frozen=True)
class Scrape:
    """One pod's answer: its metrics text, or why there is none."""

    pod: str
    text: str | None = None
    error: str = ""


def check(
    analysis: RolloutAnalysis,
    scrapes: list[Scrape],
    earlier: Mapping[str, Sample],
    now: str,
) -> tuple[Obj, dict[str, Sample]]:
    """(the check as ``status.soak.lastCheck``, each pod's sample to keep for the next one)."""
    samples: dict[str, Sample] = {}
    unread: list[str] = []
    total = Sample()
    merged: dict[float, float] = {}
    for scrape in scrapes:
        try:
            if scrape.text is None:
                raise MetricsError(scrape.error or "no answer")
            sample = parse(scrape.text)
        except MetricsError as exc:
            unread.append(f"{scrape.pod}: {exc}"[:200])
            continue
        samples[scrape.pod] = sample
        delta = sample.minus(earlier.get(scrape.pod))
        total = Sample(total.requests + delta.requests, total.errors + delta.errors)
        for le, n in delta.buckets.items():
            merged[le] = merged.get(le, 0.0) + n
    requests = int(total.requests)
    result: Obj = {"at": now, "pods": len(samples), "requests": requests}
    problems: list[str] = []
    if unread:
        problems.append("metrics not readable: " + "; ".join(unread))
    if not scrapes:
        problems.append("no Ready pod to read metrics from")
    judged = requests >= max(analysis.min_requests, 1)
    if judged:
        problems += _judge(analysis, total, merged, result)
    result["passed"] = not problems
    if problems:
        result["message"] = "; ".join(problems)[:500]
    elif not judged:
        result["message"] = (
            f"{requests} requests since the previous check, fewer than minRequests "
            f"({analysis.min_requests}): nothing judged"
        )
    return result, samples


def _judge(
    analysis: RolloutAnalysis, total: Sample, buckets: Mapping[float, float], result: Obj
) -> list[str]:
    """The thresholds ``total`` breaks; puts the measured values into ``result``."""
    problems: list[str] = []
    ratio = total.errors / total.requests
    result["errorRatio"] = f"{ratio:.4f}"
    if ratio > analysis.max_error_ratio:
        problems.append(
            f"error ratio {ratio:.4f} above {analysis.max_error_ratio} "
            f"({int(total.errors)} of {int(total.requests)} requests answered 5xx)"
        )
    p99 = quantile(0.99, buckets)
    if p99 is not None:
        p99_ms = p99 * 1000
        result["p99Ms"] = f"{p99_ms:.1f}"
        if p99_ms > analysis.max_p99_latency_ms:
            problems.append(f"p99 latency {p99_ms:.0f} ms above {analysis.max_p99_latency_ms}")
    return problems

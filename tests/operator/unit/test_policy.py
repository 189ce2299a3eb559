"""Operator policy for shared clusters: each allow-list, refused and allowed."""

from __future__ import annotations

from typing import Any

import pytest

from dchat_operator.api.policy import Policy
from dchat_operator.cli import _parser, _policy
from tests.operator.unit.conftest import cluster

pytestmark = pytest.mark.unit

INGRESS = {"enabled": True, "host": "api.dchat.dev"}


@pytest.mark.parametrize(
    ("policy", "spec", "rule"),
    [
        (
            Policy(allowed_registries=("ghcr.io/dchat-dev/",)),
            {"image": {"repository": "ghcr.io/evil/dchat"}},
            "allowed-registries",
        ),
        (
            Policy(allowed_registries=("ghcr.io",)),
            {"image": {"repository": "ghcr.io.evil.example/dchat"}},
            "allowed-registries",
        ),
        (
            # managed PostgreSQL's pods hold an API token: its image is held to the same list
            Policy(allowed_registries=("ghcr.io/dchat-dev/",)),
            {
                "replicas": 1,
                "database": {
                    "engine": "postgres",
                    "postgres": {"managed": {"image": "ghcr.io/evil/postgres:1"}},
                },
            },
            "allowed-registries",
        ),
        (Policy(), {"p2p": {"serviceType": "LoadBalancer"}}, "allowed-service-types"),
        (Policy(), {"p2p": {"serviceType": "NodePort"}}, "allowed-service-types"),
        (
            Policy(),
            {"p2p": {"annotations": {"metallb.universe.tf/address-pool": "public"}}},
            "allowed-annotation-prefixes",
        ),
        (
            Policy(),
            {"ingress": {**INGRESS, "annotations": {"haproxy.org/backend-config": "x"}}},
            "allowed-annotation-prefixes",
        ),
        (
            Policy(allowed_cluster_issuers=("letsencrypt-prod",)),
            {"ingress": {**INGRESS, "clusterIssuer": "selfsigned"}},
            "allowed-cluster-issuers",
        ),
    ],
)
def test_each_rule_refuses_and_names_itself(
    policy: Policy, spec: dict[str, Any], rule: str
) -> None:
    problems = policy.violations(cluster(**spec))
    assert len(problems) == 1
    assert problems[0].startswith(rule)


@pytest.mark.parametrize(
    ("policy", "spec"),
    [
        (
            Policy(allowed_registries=("ghcr.io/dchat-dev/",)),
            {"image": {"repository": "ghcr.io/dchat-dev/dchat"}},
        ),
        (Policy(allowed_registries=("ghcr.io",)), {"image": {"repository": "ghcr.io/x/dchat"}}),
        (  # the default managed PostgreSQL image is the project's
            Policy(allowed_registries=("ghcr.io/dchat-dev/",)),
            {"replicas": 1, "database": {"engine": "postgres", "postgres": {"managed": {}}}},
        ),
        (
            Policy(allowed_service_types=("ClusterIP", "LoadBalancer")),
            {"p2p": {"serviceType": "LoadBalancer"}},
        ),
        (
            Policy(),
            {
                "ingress": {
                    **INGRESS,
                    "annotations": {"nginx.ingress.kubernetes.io/ssl-redirect": "true"},
                }
            },
        ),
        (Policy(allowed_annotation_prefixes=("*",)), {"p2p": {"annotations": {"a.b/c": "d"}}}),
        (
            Policy(allowed_cluster_issuers=("letsencrypt-prod",)),
            {"ingress": {**INGRESS, "clusterIssuer": "letsencrypt-prod"}},
        ),
        (Policy(), {}),
    ],
)
def test_allowed_specs_pass(policy: Policy, spec: dict[str, Any]) -> None:
    assert policy.violations(cluster(**spec)) == []


def test_flags_replace_the_defaults_and_the_environment_fills_the_rest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DCHAT_OPERATOR_ALLOWED_CLUSTER_ISSUERS", "a, b")
    args = _parser().parse_args(
        ["--allowed-registry", "ghcr.io/x/", "--allowed-service-type", "LoadBalancer"]
    )
    policy = _policy(args)
    assert policy.allowed_registries == ("ghcr.io/x/",)
    assert policy.allowed_service_types == ("LoadBalancer",)
    assert policy.allowed_cluster_issuers == ("a", "b")
    assert "cert-manager.io/" in policy.allowed_annotation_prefixes


def test_a_garbage_environment_value_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from dchat_operator.handlers.options import Options

    monkeypatch.setenv("DCHAT_OPERATOR_WORKERS", "lots")
    with pytest.raises(ValueError, match="DCHAT_OPERATOR_WORKERS='lots' is not a number"):
        Options.from_env()

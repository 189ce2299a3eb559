"""The generated CRD: fresh on disk, structural, documented, and agreeing with the models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from pydantic import ValidationError

from dchat_operator.api import backups, models
from dchat_operator.api import constants as c
from dchat_operator.api.crd import (
    BACKUP_CRD,
    DEFINITIONS,
    RESTORE_CRD,
    CrdDefinition,
    crd,
    render_crd_yaml,
)
from dchat_operator.api.models import DchatCluster, DchatClusterSpec
from tests.operator.admission_cases import CASES, Case, cr

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]
CRD_FILE = REPO / "crds" / "dchat.dev_dchatclusters.yaml"
SAMPLES = REPO / "manifests" / "samples"


def _root() -> dict[str, Any]:
    schema: dict[str, Any] = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def _walk(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = [(path, node)]
    for name, child in (node.get("properties") or {}).items():
        out += _walk(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        out += _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        out += _walk(node["additionalProperties"], f"{path}{{}}")
    return out


def test_crd_file_is_fresh() -> None:
    assert CRD_FILE.read_text(encoding="utf-8") == render_crd_yaml(), (
        "crds/dchat.dev_dchatclusters.yaml is stale: run `dchat-operator crd > "
        "crds/dchat.dev_dchatclusters.yaml`"
    )


def test_crd_names_and_subresources() -> None:
    doc = crd()
    spec = doc["spec"]
    assert doc["metadata"]["name"] == "dchatclusters.dchat.dev"
    assert spec["group"] == "dchat.dev"
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == "DchatCluster"
    assert spec["names"]["plural"] == "dchatclusters"
    assert spec["names"]["shortNames"] == ["dchat"]
    version = spec["versions"][0]
    assert version["name"] == "v1alpha1"
    assert version["subresources"]["status"] == {}
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    columns = [col["name"] for col in version["additionalPrinterColumns"]]
    assert columns == ["Version", "Replicas", "Ready", "Phase", "Last Backup", "Age"]


def test_schema_is_structural() -> None:
    for path, node in _walk(_root()):
        assert "$ref" not in node, path
        for combinator in ("anyOf", "allOf", "oneOf"):
            assert combinator not in node, path
        assert "title" not in node, path
        has_type = "type" in node or node.get("x-kubernetes-int-or-string")
        assert has_type, f"{path} has no type"
        if node.get("type") == "object" and "properties" in node:
            assert "additionalProperties" not in node, path
        if isinstance(node.get("exclusiveMinimum"), int | float) and not isinstance(
            node.get("exclusiveMinimum"), bool
        ):
            pytest.fail(f"{path}: exclusiveMinimum must be boolean in OpenAPI v3.0")


def test_every_spec_field_has_a_description() -> None:
    spec = _root()["properties"]["spec"]
    missing = [
        path
        for path, node in _walk(spec, "spec")
        if not path.endswith(("[]", "}")) and not node.get("description")
    ]
    assert missing == []


def test_defaults_fill_omitted_sections() -> None:
    spec = _root()["properties"]["spec"]
    # object defaults are materialised (the apiserver checks CEL rules against them)
    assert spec["default"]["backup"]["schedule"] == "0 3 * * *"
    assert spec["default"]["database"]["engine"] == "sqlite"
    assert spec["properties"]["backup"]["default"]["enabled"] is False
    assert spec["properties"]["backup"]["properties"]["schedule"]["default"] == "0 3 * * *"
    assert spec["properties"]["server"]["properties"]["apiPort"]["default"] == 9000
    resources = spec["properties"]["resources"]["properties"]
    assert resources["requests"]["default"] == {"cpu": "1", "memory": "1Gi"}


def _rules(node: dict[str, Any]) -> list[str]:
    return [rule["rule"] for rule in node.get("x-kubernetes-validations", [])]


def test_cel_rules_cover_the_cross_field_constraints() -> None:
    spec = _root()["properties"]["spec"]
    props = spec["properties"]
    assert any("sqlite" in r and "replicas <= 1" in r for r in _rules(spec))
    assert any("has(self.postgres)" in r for r in _rules(props["database"]))
    assert any("apiPort != self.metricsPort" in r for r in _rules(props["server"]))
    schedule = props["backup"]["properties"]["schedule"]
    assert "pattern" in schedule
    messages = [v["message"] for v in spec["x-kubernetes-validations"]]
    assert any("SQLite mode allows at most 1 replica" in m for m in messages)


def _validator() -> jsonschema.Draft4Validator:
    return jsonschema.Draft4Validator(_root())


@pytest.mark.parametrize("sample", ["sqlite.yaml", "postgres.yaml"])
def test_samples_validate_against_schema_and_model(sample: str) -> None:
    doc = yaml.safe_load((SAMPLES / sample).read_text(encoding="utf-8"))
    _validator().validate(doc)
    cluster = DchatCluster.parse({**doc, "metadata": {**doc["metadata"], "namespace": "x"}})
    assert cluster.spec.version == "0.1.0"


def test_schedule_pattern_rejects_garbage_but_croniter_is_exact() -> None:
    pattern_validator = jsonschema.Draft4Validator(
        _root()["properties"]["spec"]["properties"]["backup"]["properties"]["schedule"]
    )
    assert pattern_validator.is_valid("0 3 * * *")
    assert pattern_validator.is_valid("@daily")
    assert not pattern_validator.is_valid("every day at three")
    assert not pattern_validator.is_valid("* * *")
    # passes the coarse pattern, fails croniter in the model:
    assert pattern_validator.is_valid("99 3 * * *")
    with pytest.raises(ValidationError, match="not a valid cron expression"):
        DchatClusterSpec.model_validate({"backup": {"schedule": "99 3 * * *"}})


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"replicas": 2}, "SQLite mode allows at most 1 replica"),
        ({"database": {"engine": "postgres"}}, "PostgreSQL mode needs database.postgres"),
        ({"server": {"apiPort": 9001}}, "must differ"),
        ({"backup": {"schedule": "not a cron"}}, "String should match pattern"),
        ({"replicaz": 1}, "Extra inputs are not permitted"),
        ({"replicas": "three"}, "valid integer"),
        ({"security": {"tlsEnabled": True}}, "tlsEnabled needs security.tlsSecretRef"),
        ({"backup": {"enabled": True}}, "backup.enabled needs backup.s3"),
        ({"ingress": {"enabled": True}}, "ingress.enabled needs ingress.host"),
    ],
)
def test_model_rejects_invalid_specs(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        DchatClusterSpec.model_validate(spec)


def test_node_sections_are_embedded_with_the_nodes_descriptions() -> None:
    from dchat_node.config import BridgeConfig, ChainConfig, ServerConfig

    props = _root()["properties"]["spec"]["properties"]
    chat = props["chain"]["properties"]["chatChainRpc"]
    assert chat["description"].startswith(ChainConfig.model_fields["chat_chain_rpc"].description)
    paused = props["bridge"]["properties"]["paused"]
    assert paused["description"].startswith(BridgeConfig.model_fields["paused"].description)
    api_port = props["server"]["properties"]["apiPort"]
    assert api_port["description"] == ServerConfig.model_fields["api_port"].description
    assert "jwtSecret" not in props["security"]["properties"]
    assert "jwtSecretRef" in props["security"]["properties"]
    assert "url" not in props["database"]["properties"]


def test_constants_match_crd() -> None:
    assert crd()["spec"]["versions"][0]["name"] == c.VERSION


# --- admission refuses what reconcile would fail on: the model refuses the same -------------


def _parse(name: str, spec: dict[str, Any]) -> DchatCluster:
    return DchatCluster.parse({"metadata": {"name": name, "namespace": "ns"}, "spec": spec})


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_model_refuses_what_admission_refuses(case: Case) -> None:
    with pytest.raises(ValidationError) as info:
        _parse(case.bad_name, case.bad)
    assert case.expected_model_message in str(info.value)
    _parse(case.good_name, case.good)  # the same field with a good value is accepted


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_good_values_pass_the_openapi_schema(case: Case) -> None:
    # CEL is not evaluated here (the e2e test does that); the OpenAPI part must not refuse
    _validator().validate(cr(case.good_name, case.good))


def test_cel_messages_are_the_models_messages() -> None:
    rules = {
        v["message"]
        for _path, node in _walk(_root())
        for v in node.get("x-kubernetes-validations", [])
    }
    for message in (
        models.MSG_DNS1123_NAME,
        models.MSG_SECRET_KEY,
        models.MSG_LABEL_VALUE,
        models.MSG_MULTIADDR,
        models.MSG_MULTIADDR_PORT,
        models.MSG_HOST,
        models.MSG_SNIPPET,
        models.MSG_LOG_PATH,
        models.MSG_LOG_DIR,
        models.MSG_ROLLOUT_ZERO,
        models.MSG_MAX_SURGE,
        models.MSG_MAX_UNAVAILABLE,
    ):
        assert message in rules, message


def test_every_string_list_and_map_in_the_spec_is_bounded() -> None:
    """Unbounded values make CEL cost estimates explode and let a CR carry megabytes."""
    bound = {"string": "maxLength", "array": "maxItems", "object": "maxProperties"}
    bound["integer"] = "maximum"
    unbounded = [
        path
        for path, node in _walk(_root()["properties"]["spec"], "spec")
        if node.get("type") in bound
        and bound[node["type"]] not in node
        and "enum" not in node
        and "properties" not in node  # a structured object: its fields are bounded
    ]
    assert unbounded == []


def test_root_rules_of_the_model() -> None:
    messages = [rule["message"] for rule in models.ROOT_VALIDATIONS]
    assert models.MSG_CLUSTER_NAME in messages
    assert models.MSG_CLUSTER_NAME_LENGTH in messages


def test_crd_root_carries_the_cluster_name_rules() -> None:
    root_rules = _root().get("x-kubernetes-validations", [])
    for rule in models.ROOT_VALIDATIONS:
        assert rule in root_rules


def test_log_path_rule_matches_the_model() -> None:
    # the same decisions as the CEL rule, spelled out for the awkward cases
    ok = ["/var/log/dchat/dchat.log", "/logs/x.log", "/etc/dchat-logs/x.log", "/datax/x.log"]
    bad = ["/x.log", "/data/x.log", "/data/sub/x.log", "/etc/x.log", "/etc/tls/x.log", "/tmp/x"]
    for path in ok:
        models.LoggingSpec(filePath=path)
    for path in bad:
        with pytest.raises(ValidationError, match="directory of its own"):
            models.LoggingSpec(filePath=path)


def test_quantity() -> None:
    assert models.quantity("500m") == models.quantity("0.5")
    assert models.quantity("2Gi") == models.quantity("2048Mi")
    assert models.quantity("1k") == 1000
    with pytest.raises(ValueError, match="not a quantity"):
        models.quantity("1Xi")


def test_not_acted_on_fields_say_so() -> None:
    spec = _root()["properties"]["spec"]["properties"]
    for path in (("database", "postgres", "standbys"),):
        node = spec[path[0]]
        for part in path[1:]:
            node = node["properties"][part]
        assert "Not acted on yet" in node["description"], path
    # and fields the node does act on do not
    for section, key in (
        ("server", "apiPort"),
        ("accessibility", "wcagStrictMode"),
        ("marketplace", "cacheSize"),
        ("chain", "currencyChainRpc"),
        ("logging", "level"),
        ("security", "jwtIssuer"),
        ("backup", "enabled"),
        ("backup", "schedule"),
    ):
        assert "Not acted on" not in spec[section]["properties"][key]["description"]


# --- DchatBackup and DchatRestore ---------------------------------------------------------


@pytest.mark.parametrize("definition", DEFINITIONS, ids=[d.kind.kind for d in DEFINITIONS])
def test_every_kind_has_a_fresh_crd_file(definition: CrdDefinition) -> None:
    path = REPO / "crds" / definition.file_name
    assert path.read_text(encoding="utf-8") == render_crd_yaml(definition), (
        f"{path.name} is stale: run `make crds`"
    )
    listed = (REPO / "crds" / "kustomization.yaml").read_text(encoding="utf-8")
    assert definition.file_name in listed


def _kind_root(definition: CrdDefinition) -> dict[str, Any]:
    schema: dict[str, Any] = crd(definition)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def test_backup_crd_columns_schema_and_rules() -> None:
    doc = crd(BACKUP_CRD)
    assert doc["metadata"]["name"] == "dchatbackups.dchat.dev"
    version = doc["spec"]["versions"][0]
    assert [col["name"] for col in version["additionalPrinterColumns"]] == [
        "Cluster",
        "Phase",
        "Size",
        "Started",
        "Age",
    ]
    assert version["subresources"] == {"status": {}}
    spec = _kind_root(BACKUP_CRD)["properties"]["spec"]
    assert spec["required"] == ["cluster"]
    assert spec["properties"]["method"]["enum"] == ["logical", "snapshot"]
    assert "self == oldSelf" in _rules(spec)
    status = _kind_root(BACKUP_CRD)["properties"]["status"]["properties"]
    for name in (
        "phase",
        "startedAt",
        "completedAt",
        "location",
        "size",
        "sha256",
        "engine",
        "serverVersion",
        "schemaVersion",
        "error",
        "verified",
        "conditions",
        "observedGeneration",
    ):
        assert name in status, name
    assert status["phase"]["enum"] == ["Pending", "Running", "Completed", "Failed"]
    validator = jsonschema.Draft4Validator(_kind_root(BACKUP_CRD))
    good = {"apiVersion": "dchat.dev/v1alpha1", "kind": "DchatBackup", "metadata": {"name": "b"}}
    validator.validate({**good, "spec": {"cluster": "c1", "method": "logical"}})
    assert list(validator.iter_errors({**good, "spec": {"cluster": "c1", "method": "tar"}}))
    assert list(validator.iter_errors({**good, "spec": {"verify": True}}))


def test_restore_crd_schema_and_rules() -> None:
    root = _kind_root(RESTORE_CRD)
    spec = root["properties"]["spec"]
    assert spec["required"] == ["target"]
    rules = _rules(spec)
    assert "self == oldSelf" in rules
    assert any("has(self.backup)" in r for r in rules)
    messages = [v["message"] for v in spec["x-kubernetes-validations"]]
    assert backups.MSG_RESTORE_SOURCE in messages
    for name in ("phase", "progress", "verified", "error", "backup", "conditions"):
        assert name in root["properties"]["status"]["properties"], name


def test_cluster_crd_backup_fields_are_documented_and_checked() -> None:
    spec = _root()["properties"]["spec"]
    backup = spec["properties"]["backup"]["properties"]
    for name in ("suspend", "verifyEvery", "retention", "schedule", "s3"):
        assert "Not acted on" not in backup[name]["description"], name
    s3 = backup["s3"]["properties"]
    assert s3["sse"]["enum"] == ["AES256", "aws:kms"]
    assert models.MSG_KMS_KEY in [v["message"] for v in backup["s3"]["x-kubernetes-validations"]]
    messages = [v["message"] for v in spec["x-kubernetes-validations"]]
    assert models.MSG_BOOTSTRAP_S3 in messages
    assert models.MSG_BOOTSTRAP_IMMUTABLE in messages
    status = _root()["properties"]["status"]["properties"]
    for name in ("lastBackup", "lastSuccessfulBackup", "firstRecoverabilityPoint", "bootstrap"):
        assert name in status, name


@pytest.mark.unit
@pytest.mark.parametrize("definition", DEFINITIONS, ids=lambda d: d.kind.kind)
def test_a_defaulted_spec_requires_nothing(definition: Any) -> None:
    """The apiserver validates a default against the schema: a spec that is defaulted whole
    must have no required fields (DchatBackup's was refused on install for this)."""
    spec = crd(definition)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    if "default" in spec:
        assert not spec.get("required"), spec["required"]

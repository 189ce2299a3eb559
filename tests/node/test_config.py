"""The config contract: precedence, *_FILE secrets, every bad-config path, CLI exit codes."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from dchat_node.cli import main
from dchat_node.config import ConfigError, NodeConfig, load_config, parse_config, render_toml

pytestmark = pytest.mark.unit


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def problems_of(exc: pytest.ExceptionInfo[ConfigError]) -> dict[str, str]:
    return {p.key: f"{p.message} (from {p.source})" for p in exc.value.problems}


def test_defaults_are_the_guides() -> None:
    c = NodeConfig()
    assert (c.server.api_port, c.server.metrics_port, c.server.p2p_port) == (9000, 9001, 7000)
    assert c.database.url == "sqlite:////data/dchat.db"
    assert c.database.max_connections == 20
    assert c.database.statement_cache_size == 100
    assert c.observability.jaeger_sample_rate == 0.1
    assert c.security.rate_limit_requests_per_sec == 1000
    assert c.logging.format.value == "json"
    assert c.logging.output.value == "stdout"


def test_precedence_file_then_guide_env_then_generic(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\napi_port = 9100\nmetrics_port = 9101\n")
    c = load_config(path, environ={})
    assert c.server.api_port == 9100
    assert c.server.metrics_port == 9101
    c = load_config(path, environ={"DCHAT_API_PORT": "9200"})
    assert c.server.api_port == 9200
    assert c.server.metrics_port == 9101
    c = load_config(path, environ={"DCHAT_API_PORT": "9200", "DCHAT_SERVER__API_PORT": "9300"})
    assert c.server.api_port == 9300


def test_guide_variables_all_map(tmp_path: Path) -> None:
    env = {
        "DCHAT_ENV": "staging",
        "DCHAT_HOST": "127.0.0.1",
        "DCHAT_P2P_PORT": "7100",
        "TOKIO_WORKER_THREADS": "4",
        "DATABASE_URL": "postgresql://dchat@db:5432/dchat",
        "DATABASE_MAX_CONNECTIONS": "7",
        "DATABASE_STATEMENT_CACHE_SIZE": "0",
        "CHAT_CHAIN_RPC": "http://chat:8545",
        "CURRENCY_CHAIN_RPC": "http://cur:8545",
        "RELAY_BOOTSTRAP_NODES": "/dns/r1/tcp/7000, /dns/r2/tcp/7000",
        "RELAY_EXTERNAL_ADDRESSES": "/dns/me/tcp/7000",
        "JAEGER_ENDPOINT": "http://jaeger:6831",
        "PROMETHEUS_PUSHGATEWAY": "http://pgw:9091",
        "RUST_LOG": "hyper=warn,dchat=debug",
        "TLS_CERT_PATH": "/c.crt",
        "TLS_KEY_PATH": "/c.key",
        "JWT_SECRET": "s" * 40,
        "CORS_ALLOWED_ORIGINS": "https://a.example,https://b.example",
        "MARKETPLACE_CACHE_SIZE": "5",
        "BRIDGE_TX_TIMEOUT_SECS": "42",
    }
    c = parse_config({}, environ=env)
    assert c.env == "staging"
    assert c.server.host == "127.0.0.1"
    assert c.server.p2p_port == 7100
    assert c.server.worker_threads == 4
    assert c.database.engine == "postgresql"
    assert c.database.max_connections == 7
    assert c.database.statement_cache_size == 0
    assert c.chain.chat_chain_rpc == "http://chat:8545"
    assert c.relay.bootstrap_nodes == ["/dns/r1/tcp/7000", "/dns/r2/tcp/7000"]
    assert c.relay.external_addresses == ["/dns/me/tcp/7000"]
    assert c.observability.prometheus_pushgateway == "http://pgw:9091"
    assert c.logging.level == "debug"
    assert c.security.tls_cert_path == "/c.crt"
    assert c.security.tls_key_path == "/c.key"
    assert c.security.jwt_secret is not None
    assert c.security.jwt_secret.get_secret_value() == "s" * 40
    assert c.security.cors_allowed_origins == ["https://a.example", "https://b.example"]
    assert c.marketplace.cache_size == 5
    assert c.bridge.transaction_timeout_secs == 42


def test_generic_form_reaches_every_section_and_lists() -> None:
    c = parse_config(
        {},
        environ={
            "DCHAT_BRIDGE__VALIDATOR_QUORUM": "3",
            "DCHAT_SECURITY__CORS_ALLOWED_ORIGINS": "https://x.example",
            "DCHAT_LOGGING__FORMAT": "text",
            "DCHAT_SERVER__SHUTDOWN_GRACE_SECS": "5",
        },
    )
    assert c.bridge.validator_quorum == 3
    assert c.security.cors_allowed_origins == ["https://x.example"]
    assert c.logging.format.value == "text"
    assert c.server.shutdown_grace_secs == 5


def test_file_variables_supply_secrets(tmp_path: Path) -> None:
    secret = tmp_path / "jwt"
    secret.write_text("file-secret-value-0123456789abcdef\n")
    db = tmp_path / "db"
    db.write_text("postgresql://dchat:pw@db/dchat")
    c = parse_config(
        {},
        environ={
            "JWT_SECRET_FILE": str(secret),
            "DCHAT_DATABASE__URL_FILE": str(db),
        },
    )
    assert c.security.jwt_secret is not None
    assert c.security.jwt_secret.get_secret_value() == "file-secret-value-0123456789abcdef"
    assert c.database.url == "postgresql://dchat:pw@db/dchat"


def test_unreadable_file_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config({}, environ={"JWT_SECRET_FILE": str(tmp_path / "nope")})
    assert "cannot read" in problems_of(exc)["JWT_SECRET"]
    assert "JWT_SECRET_FILE" in problems_of(exc)["JWT_SECRET"]


@pytest.mark.parametrize(
    ("toml", "key", "expected"),
    [
        ("[server]\nap_port = 1\n", "server.ap_port", "unknown key"),
        ("[servr]\nhost = 'x'\n", "servr", "unknown key"),
        ("[server]\napi_port = 'abc'\n", "server.api_port", "valid integer"),
        ("[server]\napi_port = 70000\n", "server.api_port", "less than or equal to 65535"),
        ("[server]\napi_port = 9001\n", "server", "must differ"),
        ("[database]\nurl = 'mysql://x'\n", "database", "sqlite:// or postgresql://"),
        ("[observability]\njaeger_sample_rate = 2\n", "observability.jaeger_sample_rate", "1"),
        ("[logging]\nlevel = 'loud'\n", "logging.level", "'trace'"),
        ("[logging]\nformat = 'xml'\n", "logging.format", "json"),
        ("[relay]\nbootstrap_nodes = ['relay1:7000']\n", "relay", "not a multiaddr"),
        ("[security]\nrate_limit_enabled = 'maybe'\n", "security.rate_limit_enabled", "boolean"),
        ("env = 'prod'\n", "env", "production"),
    ],
)
def test_bad_values_name_the_key_file_and_expectation(
    tmp_path: Path, toml: str, key: str, expected: str
) -> None:
    path = write(tmp_path, toml)
    with pytest.raises(ConfigError) as exc:
        load_config(path, environ={})
    found = problems_of(exc)
    assert key in found, found
    assert expected in found[key]
    assert str(path) in found[key]


def test_several_problems_reported_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\napi_port = 'x'\nbogus = 1\n[logging]\nlevel = 'loud'\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path, environ={})
    assert set(problems_of(exc)) >= {"server.api_port", "server.bogus", "logging.level"}


def test_env_problem_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(None, environ={"DCHAT_API_PORT": "ninety"})
    assert "DCHAT_API_PORT" in problems_of(exc)["server.api_port"]
    with pytest.raises(ConfigError) as exc:
        load_config(None, environ={"DCHAT_NOPE__X": "1"})
    assert "DCHAT_NOPE__X" in problems_of(exc)["nope"]


def test_file_level_problems(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path / "missing.toml", environ={})
    assert "file not found" in problems_of(exc)["<file>"]
    bad = write(tmp_path, "[server\nhost=")
    with pytest.raises(ConfigError) as exc:
        load_config(bad, environ={})
    assert "not valid TOML" in problems_of(exc)["<file>"]


def test_secret_values_never_echoed_in_problems() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config({}, environ={"DATABASE_URL": "mysql://u:hunter2secret@h/db"})
    assert "hunter2secret" not in str(exc.value)


def test_render_toml_round_trips_without_secrets(tmp_path: Path) -> None:
    c = parse_config(
        {"security": {"jwt_secret": "x" * 40}, "relay": {"bootstrap_nodes": ["/dns/a/tcp/1"]}},
        environ={},
    )
    text = render_toml(c)
    assert "x" * 40 not in text
    assert "jwt_secret" not in text
    again = parse_config(tomllib.loads(text), environ={})
    assert again.relay == c.relay
    assert again.server == c.server


def test_example_config_is_valid() -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "config.toml"
    c = load_config(example, environ={})
    assert c.database.engine == "sqlite"
    assert c.security.cors_allowed_origins == ["https://app.dchat.dev", "https://www.dchat.dev"]


# -- the CLI's handling --------------------------------------------------------------------


def test_cli_bad_config_exits_2_with_one_line_per_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, "[server]\napi_port = 'x'\ntypo = 1\n")
    assert main(["--config", str(path), "check-config"]) == 2
    err = capsys.readouterr().err
    lines = [ln.strip() for ln in err.splitlines()[1:]]
    assert len(lines) == 2
    assert any(ln.startswith("server.api_port:") and str(path) in ln for ln in lines)
    assert any(ln.startswith("server.typo: unknown key") for ln in lines)
    # the default command (serve) refuses the same file the same way, before starting
    assert main(["--config", str(path)]) == 2


def test_cli_check_config_ok_and_show(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JWT_SECRET", "cli-secret-0123456789abcdefghijkl")
    path = write(tmp_path, "[server]\napi_port = 9100\n")
    assert main(["check-config", "--config", str(path), "--show"]) == 0
    out, err = capsys.readouterr()
    assert "api_port = 9100" in out
    assert "cli-secret" not in out
    assert "config ok" in err


def test_cli_check_config_reports_missing_tls_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path,
        f"[security]\ntls_enabled = true\ntls_cert_path = '{tmp_path}/no.crt'\n"
        f"tls_key_path = '{tmp_path}/no.key'\n",
    )
    assert main(["--config", str(path), "check-config"]) == 2
    err = capsys.readouterr().err
    assert "security.tls_cert_path: file not found" in err
    assert "security.tls_key_path: file not found" in err


def test_cli_rejects_short_jwt_secret_and_bad_public_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JWT_SECRET", "too-short")
    bad_key = tmp_path / "key.pem"
    bad_key.write_text("not a key")
    monkeypatch.setenv("DCHAT_SECURITY__JWT_PUBLIC_KEY_PATH", str(bad_key))
    assert main(["--config", str(write(tmp_path, "")), "check-config"]) == 2
    err = capsys.readouterr().err
    assert "security.jwt_secret: too short" in err
    assert "too-short" not in err
    assert f"security.jwt_public_key_path: {bad_key} is not a PEM public key" in err


# -- check-config --show never prints a credential --------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://app:S3cret@host/db", "postgresql://app:***@host/db"),
        (
            "postgresql://app:p%40ss@h1:5432,h2:5432/db?target_session_attrs=read-write",
            "postgresql://app:***@h1:5432,h2:5432/db?target_session_attrs=read-write",
        ),
        ("postgresql://dchat@db:5432/dchat", "postgresql://dchat@db:5432/dchat"),
        ("https://rpc.example/v2?apikey=K123&chain=1", "https://rpc.example/v2?apikey=***&chain=1"),
        ("https://rpc.example/?token=T1", "https://rpc.example/?token=***"),
        (
            "https://rpc.example/?key=K1&x=1&Api_Key=K2",
            "https://rpc.example/?key=***&x=1&Api_Key=***",
        ),
        ("postgresql://u@h/db?sslpassword=P1", "postgresql://u@h/db?sslpassword=***"),
        ("http://user:pw@pgw:9091", "http://user:***@pgw:9091"),
        ("/dns/relay1/tcp/7000", "/dns/relay1/tcp/7000"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    from dchat_node.config import redact_url

    assert redact_url(url) == shown


def test_cli_show_masks_every_url_credential_and_the_jwt_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JWT_SECRET", "cli-secret-0123456789abcdefghijkl")
    monkeypatch.setenv("DATABASE_URL", "postgresql://app:S3cret@host/db")
    monkeypatch.setenv("CHAT_CHAIN_RPC", "https://rpcuser:RpcPass1@chat.example:8545")
    monkeypatch.setenv("CURRENCY_CHAIN_RPC", "https://cur.example/v3?apikey=ApiKey42&x=1")
    monkeypatch.setenv("PROMETHEUS_PUSHGATEWAY", "https://pgw.example/?token=PgwToken9")
    monkeypatch.setenv("JAEGER_ENDPOINT", "https://tracer:TracePw7@otel.example:4318")
    assert main(["check-config", "--config", str(write(tmp_path, "")), "--show"]) == 0
    out, err = capsys.readouterr()
    for secret in ("S3cret", "RpcPass1", "ApiKey42", "PgwToken9", "TracePw7", "cli-secret"):
        assert secret not in out + err
    assert "jwt_secret" not in out
    shown = tomllib.loads(out)
    assert shown["database"]["url"] == "postgresql://app:***@host/db"
    assert shown["chain"]["chat_chain_rpc"] == "https://rpcuser:***@chat.example:8545"
    assert shown["chain"]["currency_chain_rpc"] == "https://cur.example/v3?apikey=***&x=1"
    assert shown["observability"]["prometheus_pushgateway"] == "https://pgw.example/?token=***"
    assert shown["observability"]["jaeger_endpoint"] == "https://tracer:***@otel.example:4318"


def test_log_redaction_covers_every_url_credential() -> None:
    from dchat_node.config import secret_values

    c = parse_config(
        {
            "database": {"url": "postgresql://app:S3cret@host/db"},
            "chain": {"chat_chain_rpc": "https://x.example/?apikey=ApiKey42"},
            "security": {"jwt_secret": "j" * 40},
        },
        environ={},
    )
    assert set(secret_values(c)) == {"S3cret", "ApiKey42", "j" * 40}


def test_config_problems_mask_url_credentials() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config(
            {"chain": {"chat_chain_rpc": 5, "rpc_timeout_secs": "x?token=Tok99"}}, environ={}
        )
    assert "Tok99" not in str(exc.value)

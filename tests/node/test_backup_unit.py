"""Unit tests of the backup commands' boundaries: the manifest model, the environment
contract, argument checks, the JSON result and its termination-log form, URL handling."""

from __future__ import annotations

import hashlib
import io
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import zstandard

from dchat_node.backup.command import TERMINATION_LIMIT, report, termination_text
from dchat_node.backup.errors import BackupError, SettingsError, scrub
from dchat_node.backup.manifest import Manifest, ManifestObject
from dchat_node.backup.pgstream import StreamingSink
from dchat_node.backup.pgstream import load_settings as load_settings_of
from dchat_node.backup.postgres import split_password, with_database
from dchat_node.backup.settings import check_backup_name, load_settings, read_credentials
from dchat_node.backup.streams import HashingReader
from dchat_node.cli import main

pytestmark = pytest.mark.unit

SHA = "a" * 64


def _manifest(**over: Any) -> Manifest:
    data: dict[str, Any] = {
        "cluster": "c1",
        "name": "b1",
        "engine": "postgres",
        "server_version": "15.18",
        "schema_version": 3,
        "created_at": datetime(2026, 11, 30, 12, 0, tzinfo=UTC),
        "completed_at": datetime(2026, 11, 30, 12, 1, 30, 500000, tzinfo=UTC),
        "objects": [
            ManifestObject(key="dump.pgcustom.zst", size=10, sha256=SHA, content="pg_dump-custom")
        ],
        "row_counts": {"users": 2, "messages": 5},
        "tool": "dchat-node 0.1.0",
    }
    data.update(over)
    return Manifest(**data)


# -- manifest -----------------------------------------------------------------------------


def test_manifest_json_is_camel_case_rfc3339_and_round_trips() -> None:
    manifest = _manifest()
    doc = json.loads(manifest.to_json())
    assert doc["formatVersion"] == 1
    assert doc["serverVersion"] == "15.18"
    assert doc["schemaVersion"] == 3
    assert doc["createdAt"] == "2026-11-30T12:00:00Z"
    assert doc["completedAt"] == "2026-11-30T12:01:30.500000Z"
    assert doc["objects"] == [
        {
            "key": "dump.pgcustom.zst",
            "size": 10,
            "sha256": SHA,
            "compression": "zstd",
            "content": "pg_dump-custom",
        }
    ]
    assert doc["rowCounts"] == {"users": 2, "messages": 5}
    assert Manifest.from_json(manifest.to_json(), "m") == manifest


def test_result_sha256_of_one_object_is_its_own_and_of_several_the_hash_of_the_digests() -> None:
    one = _manifest()
    assert one.sha256 == SHA
    assert one.size == 10
    two = _manifest(
        objects=[
            ManifestObject(key="a", size=1, sha256=SHA, content="pg_dump-custom"),
            ManifestObject(key="b", size=2, sha256="b" * 64, content="pg_dump-custom"),
        ]
    )
    assert two.size == 3
    assert len(two.sha256) == 64
    assert two.sha256 not in {SHA, "b" * 64}
    summary = one.summary("s3://b/p/b1/")
    assert summary["startedAt"] == "2026-11-30T12:00:00Z"
    assert summary["location"] == "s3://b/p/b1/"
    assert summary["rowCounts"] == {"users": 2, "messages": 5}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"formatVersion": 2}, "formatVersion 2; this node reads formatVersion 1"),
        ({"engine": "mysql"}, "invalid: engine"),
        ({"objects": []}, "invalid: objects"),
        ({"extra": 1}, "invalid: extra"),
        ({"schemaVersion": -1}, "invalid: schemaVersion"),
    ],
)
def test_manifest_refuses_what_it_does_not_understand(change: dict[str, Any], message: str) -> None:
    doc = json.loads(_manifest().to_json())
    doc.update(change)
    with pytest.raises(BackupError, match=message):
        Manifest.from_json(json.dumps(doc).encode(), "s3://b/k")


def test_manifest_object_refuses_a_bad_digest_or_key() -> None:
    with pytest.raises(ValueError, match="sha256"):
        ManifestObject(key="k", size=1, sha256="XYZ", content="sqlite-database")
    with pytest.raises(ValueError, match="key"):
        ManifestObject(key="../x", size=1, sha256=SHA, content="sqlite-database")
    with pytest.raises(BackupError, match="not JSON"):
        Manifest.from_json(b"{", "m")


# -- environment ----------------------------------------------------------------------------


def test_settings_defaults_and_values() -> None:
    s = load_settings({"DCHAT_BACKUP_BUCKET": "my-bucket"})
    assert (s.bucket, s.prefix, s.region, s.endpoint, s.sse) == (
        "my-bucket",
        "",
        "us-east-1",
        None,
        None,
    )
    assert s.credentials_dir == Path("/etc/dchat/secrets/s3")
    assert s.location("b1") == "s3://my-bucket/b1/"
    s = load_settings(
        {
            "DCHAT_BACKUP_BUCKET": "b.example",
            "DCHAT_BACKUP_PREFIX": "dchat/ns/c1/",
            "DCHAT_BACKUP_REGION": "eu-west-1",
            "DCHAT_BACKUP_ENDPOINT": "https://s3.example:9000/",
            "DCHAT_BACKUP_SSE": "aws:kms",
            "DCHAT_BACKUP_KMS_KEY_ID": "arn:aws:kms:eu-west-1:1:key/x",
            "DCHAT_BACKUP_CLUSTER": "c1",
            "DCHAT_BACKUP_PART_SIZE_MIB": "64",
            "UNRELATED": "x",
        }
    )
    assert s.endpoint == "https://s3.example:9000"
    assert s.location("n") == "s3://b.example/dchat/ns/c1/n/"
    assert s.part_size_mib == 64


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "DCHAT_BACKUP_BUCKET: required"),
        ({"DCHAT_BACKUP_BUCKET": "  "}, "DCHAT_BACKUP_BUCKET: required"),
        ({"DCHAT_BACKUP_BUCKET": "Bad_Bucket"}, "DCHAT_BACKUP_BUCKET: not an S3 bucket name"),
        ({"DCHAT_BACKUP_PREFIX": "a/b"}, "DCHAT_BACKUP_PREFIX: must end with '/'"),
        ({"DCHAT_BACKUP_PREFIX": "/a/"}, "DCHAT_BACKUP_PREFIX: must not start with '/'"),
        ({"DCHAT_BACKUP_ENDPOINT": "s3.example"}, "DCHAT_BACKUP_ENDPOINT: must be an http"),
        ({"DCHAT_BACKUP_SSE": "DES"}, "DCHAT_BACKUP_SSE: Input should be 'AES256' or 'aws:kms'"),
        ({"DCHAT_BACKUP_KMS_KEY_ID": "k"}, "DCHAT_BACKUP_SSE is not aws:kms"),
        ({"DCHAT_BACKUP_PART_SIZE_MIB": "1"}, "DCHAT_BACKUP_PART_SIZE_MIB: Input should be"),
        ({"DCHAT_BACKUP_CONCURRENCY": "many"}, "DCHAT_BACKUP_CONCURRENCY: Input should be"),
    ],
)
def test_settings_problems_name_the_variable(env: dict[str, str], expected: str) -> None:
    full = {"DCHAT_BACKUP_BUCKET": "ok-bucket", **env}
    if env == {}:
        full = {}
    with pytest.raises(SettingsError) as caught:
        load_settings(full)
    assert any(p.startswith(expected) or expected in p for p in caught.value.problems), (
        caught.value.problems
    )


def test_credentials_from_the_mounted_secret(tmp_path: Path) -> None:
    assert read_credentials(tmp_path / "absent") is None  # boto3's default chain then
    (tmp_path / "AWS_ACCESS_KEY_ID").write_text("AKIA\n")
    with pytest.raises(SettingsError, match="AWS_SECRET_ACCESS_KEY is missing"):
        read_credentials(tmp_path)
    (tmp_path / "AWS_SECRET_ACCESS_KEY").write_text("")
    with pytest.raises(SettingsError, match="AWS_SECRET_ACCESS_KEY is empty"):
        read_credentials(tmp_path)
    (tmp_path / "AWS_SECRET_ACCESS_KEY").write_text("s3cret\n")
    creds = read_credentials(tmp_path)
    assert creds is not None
    assert (creds.access_key_id, creds.secret_access_key, creds.session_token) == (
        "AKIA",
        "s3cret",
        None,
    )


@pytest.mark.parametrize("name", ["b1", "nightly-20261130-0200", "Manual_1.x", "a" * 253])
def test_backup_names_accepted(name: str) -> None:
    assert check_backup_name(name) == name


@pytest.mark.parametrize("name", ["", "-a", "a/b", "a..b", "a b", "a" * 254, "x-"])
def test_backup_names_refused(name: str) -> None:
    with pytest.raises(SettingsError, match="--name"):
        check_backup_name(name)


# -- the CLI's result ---------------------------------------------------------------------------


def test_cli_bad_settings_exit_2_with_json_last_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "termination"
    log.touch()
    env = {"DCHAT_TERMINATION_LOG": str(log), "DATABASE_URL": f"sqlite:///{tmp_path}/x.db"}
    with pytest.MonkeyPatch.context() as mp:
        for key in list(os.environ):
            if key.startswith("DCHAT_BACKUP_"):
                mp.delenv(key)
        for key, value in env.items():
            mp.setenv(key, value)
        code = main(["backup", "create", "--name", "b1"])
    assert code == 2
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last) == {
        "ok": False,
        "command": "create",
        "name": "b1",
        "error": "invalid settings: DCHAT_BACKUP_BUCKET: required",
    }
    assert json.loads(log.read_text()) == json.loads(last)


def test_cli_requires_name_or_latest(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["backup", "restore"])
    assert exit_.value.code == 2
    assert "--name" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["backup", "verify", "--name", "a", "--latest"])


def test_termination_text_fits_4_kib() -> None:
    big = {
        "ok": True,
        "command": "create",
        "name": "b",
        "rowCounts": {f"table_{i}": i for i in range(400)},
    }
    text = termination_text(big)
    assert len(text.encode()) <= TERMINATION_LIMIT
    assert json.loads(text) == {"ok": True, "command": "create", "name": "b"}
    small = {"ok": False, "command": "list", "name": None, "error": "S3 unreachable"}
    assert json.loads(termination_text(small)) == small
    listing = {"ok": True, "command": "list", "name": None, "backups": [{"n": "x" * 100}] * 60}
    assert json.loads(termination_text(listing))["count"] == 60


def test_report_prints_one_line_and_creates_an_overridden_termination_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report({"ok": True, "command": "list"}, tmp_path / "created-when-overridden")
    assert (tmp_path / "created-when-overridden").exists()
    assert capsys.readouterr().out == '{"ok":true,"command":"list"}\n'


# -- helpers ---------------------------------------------------------------------------------


def test_password_goes_to_the_environment_not_the_dsn() -> None:
    assert split_password("postgresql://u:p%40ss@h:5432/db?sslmode=require") == (
        "postgresql://u@h:5432/db?sslmode=require",
        "p@ss",
    )
    assert split_password("postgresql://u:pw@h1:5432,h2:5432/db") == (
        "postgresql://u@h1:5432,h2:5432/db",
        "pw",
    )
    assert split_password("postgresql://u@h/db") == ("postgresql://u@h/db", None)
    assert scrub("x pw y", ["pw", ""]) == "x *** y"


def test_with_database_keeps_hosts_and_parameters() -> None:
    assert (
        with_database("postgresql://u:p@h1,h2:5433/app?target_session_attrs=read-write", "v")
        == "postgresql://u:p@h1,h2:5433/v?target_session_attrs=read-write"
    )
    assert with_database("postgresql://u@h", "v") == "postgresql://u@h/v"


def test_hashing_reader_returns_full_parts() -> None:
    class Trickle(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self._data = data

        def read(self, size: int = -1) -> bytes:
            n = 3 if size < 0 else min(3, size)  # never more than 3 bytes at a time
            chunk, self._data = self._data[:n], self._data[n:]
            return chunk

    reader = HashingReader(Trickle(b"0123456789"))
    assert reader.read(8) == b"01234567"  # not the 3 bytes one read of the source gives
    assert reader.read(-1) == b"89"
    assert reader.read(8) == b""
    assert reader.size == 10
    assert reader.sha256 == "84d89877f0d4041efb6bf91a16f0248f2fd573e6af05c19f96bedb9f882f7882"


def test_streaming_sink_hashes_the_compressed_bytes_and_feeds_the_decompressed_ones() -> None:
    raw = b"COPY public.messages FROM stdin;\n" * 50_000
    packed = zstandard.ZstdCompressor(threads=-1, write_checksum=True).compress(raw)
    out = io.BytesIO()
    sink = StreamingSink(out)
    for start in range(0, len(packed), 4096):  # s3transfer writes the parts in order
        sink.write(packed[start : start + 4096])
    assert out.getvalue() == raw
    assert sink.size == len(packed)
    assert sink.sha256 == hashlib.sha256(packed).hexdigest()
    assert sink.error is None


def test_streaming_sink_keeps_hashing_after_a_corrupted_frame() -> None:
    """A corrupted object: decompression stops feeding pg_restore, but the SHA-256 covers
    every byte, so the error reported is the checksum mismatch."""
    packed = bytearray(zstandard.ZstdCompressor(write_checksum=True).compress(os.urandom(300_000)))
    packed[100] ^= 0xFF
    sink = StreamingSink(io.BytesIO())
    for start in range(0, len(packed), 1000):
        sink.write(bytes(packed[start : start + 1000]))
    assert sink.error is not None
    assert sink.error.startswith("does not decompress")
    assert sink.size == len(packed)
    assert sink.sha256 == hashlib.sha256(packed).hexdigest()


def test_streaming_sink_survives_pg_restore_closing_its_pipe() -> None:
    packed = zstandard.ZstdCompressor().compress(os.urandom(1_000_000))
    read_end, write_end = os.pipe()
    os.close(read_end)  # pg_restore died: writes fail with EPIPE
    with os.fdopen(write_end, "wb", buffering=0) as pipe:
        sink = StreamingSink(pipe)
        for start in range(0, len(packed), 65536):
            sink.write(packed[start : start + 65536])
    assert sink.error is not None
    assert sink.error.startswith("pg_restore stopped reading")
    assert sink.sha256 == hashlib.sha256(packed).hexdigest()


def test_load_settings_map_jobs_to_parallel_maintenance_workers() -> None:
    assert load_settings_of(1) == ("max_parallel_maintenance_workers = 0",)
    assert load_settings_of(4) == ("max_parallel_maintenance_workers = 3",)

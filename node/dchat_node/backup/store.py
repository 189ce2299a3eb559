"""The S3 store of backups: ``s3://<bucket>/<prefix><name>/`` holds a backup's data objects
and, written last, ``manifest.json``.

- boto3 with ``request_checksum_calculation``/``response_checksum_validation`` set to
  ``when_required`` when an endpoint is given (S3-compatible servers often reject the
  aws-chunked trailing checksums boto3 sends by default); our own SHA-256 is in the manifest.
- Uploads and downloads go through boto3's managed transfer (``TransferConfig``: part size
  and concurrency from the settings); streams are read part by part, never copied whole.
- Optional server-side encryption (``AES256`` or ``aws:kms`` with a key id) on every object.
- A failed upload leaves no multipart upload behind: s3transfer aborts on error, and when
  that abort could not reach S3 either, ``abort_uploads`` retries until
  ``abort_timeout_secs`` (the error then says if one may remain).
- Errors become ``BackupError`` with one line saying why: S3 unreachable, access denied,
  no such bucket, no such backup.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import boto3
from boto3.s3.transfer import TransferConfig, create_transfer_manager
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from dchat_node.backup.errors import BackupError, one_line, scrub
from dchat_node.backup.manifest import MANIFEST_NAME, Manifest
from dchat_node.backup.settings import MIB, BackupSettings, Credentials
from dchat_node.backup.streams import STOP, STOPPED

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from dchat_node.backup.streams import Readable, Writable

log = logging.getLogger("dchat.backup")

_DENIED = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "AllAccessDisabled",
    "403",
}


class S3Store:
    def __init__(self, settings: BackupSettings, credentials: Credentials | None) -> None:
        self.settings = settings
        self.secrets = [credentials.secret_access_key] if credentials else []
        if credentials and credentials.session_token:
            self.secrets.append(credentials.session_token)
        options: dict[str, Any] = {
            "region_name": settings.region,
            "retries": {"max_attempts": 4, "mode": "standard"},
            "connect_timeout": 10,
            "read_timeout": 60,
            "max_pool_connections": max(10, settings.concurrency * 2),
        }
        if settings.endpoint:
            options["request_checksum_calculation"] = "when_required"
            options["response_checksum_validation"] = "when_required"
            options["s3"] = {"addressing_style": "path"}
        config = Config(**options)
        keys: dict[str, Any] = {}
        if credentials is not None:
            keys = {
                "aws_access_key_id": credentials.access_key_id,
                "aws_secret_access_key": credentials.secret_access_key,
                "aws_session_token": credentials.session_token,
            }
        self.client: S3Client = boto3.client(
            "s3", endpoint_url=settings.endpoint, config=config, **keys
        )
        part = settings.part_size_mib * MIB
        self.transfer = TransferConfig(
            multipart_threshold=part,
            multipart_chunksize=part,
            max_concurrency=settings.concurrency,
            use_threads=True,
        )

    # -- naming --------------------------------------------------------------------------
    @property
    def bucket(self) -> str:
        return self.settings.bucket

    def key(self, name: str, obj: str) -> str:
        return f"{self.settings.prefix}{name}/{obj}"

    def location(self, name: str) -> str:
        return self.settings.location(name)

    # -- errors --------------------------------------------------------------------------
    def describe(self, exc: BaseException, doing: str) -> BackupError:
        """One line saying why ``doing`` failed (no secret in it)."""
        return BackupError(scrub(f"{doing}: {self._why(exc)}", self.secrets))

    def _why(self, exc: BaseException) -> str:
        seen: BaseException | None = exc
        while seen is not None:
            if isinstance(seen, BackupError):
                return str(seen)
            if isinstance(seen, ClientError):
                return self._client_error(seen)
            if isinstance(seen, NoCredentialsError):
                return (
                    "no S3 credentials: DCHAT_BACKUP_CREDENTIALS_DIR "
                    f"({self.settings.credentials_dir}) is absent and boto3 found none"
                )
            if isinstance(seen, BotoConnectionError | HTTPClientError):
                where = self.settings.endpoint or f"S3 in {self.settings.region}"
                return f"S3 unreachable ({where}): {type(seen).__name__}"
            if isinstance(seen, BotoCoreError):
                return f"S3 error: {one_line(str(seen), 300)}"
            seen = seen.__cause__ or seen.__context__
        if isinstance(exc, OSError) and exc.errno == 28:  # ENOSPC
            return f"disk full: {exc.filename or exc}"
        return one_line(f"{type(exc).__name__}: {exc}", 300)

    def _client_error(self, exc: ClientError) -> str:
        err = exc.response.get("Error", {})
        code = str(err.get("Code", "?"))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code == "NoSuchBucket" or (code == "404" and "Bucket" in str(exc)):
            return f"no such bucket: {self.bucket}"
        if code in _DENIED or status == 403:
            return (
                f"access denied by S3 ({code}) on bucket {self.bucket}: check the credentials "
                "(DCHAT_BACKUP_CREDENTIALS_DIR) and the bucket policy"
            )
        return f"S3 error {code}: {one_line(str(err.get('Message', exc)), 300)}"

    # -- objects -------------------------------------------------------------------------
    def _extra_args(self) -> dict[str, str]:
        extra: dict[str, str] = {}
        if self.settings.sse:
            extra["ServerSideEncryption"] = self.settings.sse
        if self.settings.kms_key_id:
            extra["SSEKMSKeyId"] = self.settings.kms_key_id
        return extra

    def upload(self, key: str, source: Readable, content_type: str) -> None:
        """Stream ``source`` to ``key`` (multipart above the part size). On failure: abort
        any multipart upload of ``key`` and raise ``BackupError``."""
        extra = {**self._extra_args(), "ContentType": content_type}
        try:
            with create_transfer_manager(self.client, self.transfer) as manager:
                future = manager.upload(
                    source,  # type: ignore[arg-type]  # any object with read()
                    self.bucket,
                    key,
                    extra_args=extra,
                )
                # parts read ahead are uploaded from memory: a stop (SIGTERM) must cancel
                # the transfer itself, not only fail the next read of the stream
                while not future.done():
                    if STOP.wait(0.2):
                        future.cancel()
                        break
                future.result()
        except Exception as exc:
            doing = f"upload of s3://{self.bucket}/{key} failed"
            error = (
                BackupError(f"{doing}: {STOPPED}") if STOP.is_set() else self.describe(exc, doing)
            )
            left = self.abort_uploads(key)
            if left:
                raise BackupError(f"{error}; {left}") from None
            raise error from None

    def abort_uploads(self, key: str) -> str | None:
        """Abort every multipart upload of ``key``, retrying until the abort timeout.
        None when none is left, else a sentence saying what may remain."""
        deadline = time.monotonic() + self.settings.abort_timeout_secs
        delay = 0.5
        while True:
            try:
                self._abort_once(key)
                return None
            except Exception as exc:
                if time.monotonic() + delay > deadline:
                    why = self._why(exc)
                    return (
                        f"could not abort the multipart upload of {key} ({why}): abort it "
                        "later or let a lifecycle rule (AbortIncompleteMultipartUpload) do it"
                    )
                log.warning("aborting the multipart upload of %s failed; retrying", key)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _abort_once(self, key: str) -> None:
        uploads = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=key)
        for upload in uploads.get("Uploads", []):
            if upload.get("Key") == key:
                self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=key, UploadId=upload["UploadId"]
                )
                log.info("aborted multipart upload %s of %s", upload["UploadId"], key)

    def download(self, key: str, sink: Writable) -> None:
        """Write the object's bytes into ``sink`` in order (parallel ranged GETs: ``sink``
        has no ``seek``, so s3transfer hands it the parts in order)."""
        try:
            self.client.download_fileobj(
                self.bucket,
                key,
                sink,  # type: ignore[arg-type]  # any object with write()
                Config=self.transfer,
            )
        except Exception as exc:
            raise self.describe(exc, f"download of s3://{self.bucket}/{key} failed") from None

    def put_manifest(self, manifest: Manifest) -> None:
        key = self.key(manifest.name, MANIFEST_NAME)
        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=manifest.to_json(),
                ContentType="application/json",
                **self._extra_args(),  # type: ignore[arg-type]
            )
        except Exception as exc:
            raise self.describe(exc, f"writing s3://{self.bucket}/{key} failed") from None

    def has_manifest(self, name: str) -> bool:
        key = self.key(name, MANIFEST_NAME)
        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                return False
            raise self.describe(exc, f"reading s3://{self.bucket}/{key} failed") from None
        except Exception as exc:
            raise self.describe(exc, f"reading s3://{self.bucket}/{key} failed") from None
        return True

    def get_manifest(self, name: str) -> Manifest:
        key = self.key(name, MANIFEST_NAME)
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404"}:
                raise BackupError(
                    f"no complete backup named {name} at {self.location(name)} (no {MANIFEST_NAME})"
                ) from None
            raise self.describe(exc, f"reading s3://{self.bucket}/{key} failed") from None
        except Exception as exc:
            raise self.describe(exc, f"reading s3://{self.bucket}/{key} failed") from None
        manifest = Manifest.from_json(body, f"s3://{self.bucket}/{key}")
        if manifest.name != name:
            raise BackupError(
                f"manifest s3://{self.bucket}/{key} names backup {manifest.name!r}, not {name!r}"
            )
        return manifest

    def _keys(self, prefix: str) -> Iterator[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                yield obj["Key"]

    def backup_names(self) -> tuple[list[str], list[str]]:
        """(names with a manifest, names without one) under the prefix."""
        prefix = self.settings.prefix
        complete: set[str] = set()
        seen: set[str] = set()
        try:
            for key in self._keys(prefix):
                rest = key[len(prefix) :]
                name, sep, obj = rest.partition("/")
                if not sep or "/" in obj:
                    continue
                seen.add(name)
                if obj == MANIFEST_NAME:
                    complete.add(name)
        except Exception as exc:
            raise self.describe(exc, f"listing {self.settings.location()} failed") from None
        return sorted(complete), sorted(seen - complete)

    def delete_backup(self, name: str) -> int:
        """Delete the manifest first (the backup stops being complete at once), then the
        other objects, then abort unfinished uploads under it. Returns objects deleted."""
        folder = self.key(name, "")
        manifest_key = self.key(name, MANIFEST_NAME)
        try:
            keys = list(self._keys(folder))
            if not keys:
                raise BackupError(f"no backup named {name} at {self.location(name)}")
            deleted = 0
            if manifest_key in keys:
                self.client.delete_object(Bucket=self.bucket, Key=manifest_key)
                deleted += 1
            rest = [k for k in keys if k != manifest_key]
            for start in range(0, len(rest), 1000):
                batch = rest[start : start + 1000]
                answer = self.client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True},
                )
                errors = answer.get("Errors", [])
                if errors:
                    first = errors[0]
                    raise BackupError(
                        f"S3 refused to delete {first.get('Key')}: {first.get('Code')}"
                    )
                deleted += len(batch)
            uploads = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=folder)
            for upload in uploads.get("Uploads", []):
                self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                )
        except BackupError:
            raise
        except Exception as exc:
            raise self.describe(exc, f"deleting {self.location(name)} failed") from None
        return deleted

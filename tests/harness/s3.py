"""An S3-compatible server on loopback, used only through boto3.

Default: moto's server mode (``moto_server``, from PyPI) as a subprocess on a free
127.0.0.1 port. When ``DCHAT_TEST_S3_ENDPOINT`` is set, that endpoint is used instead (a
real S3 or MinIO), with ``DCHAT_TEST_S3_ACCESS_KEY`` / ``DCHAT_TEST_S3_SECRET_KEY`` /
``DCHAT_TEST_S3_REGION``. Clients are made with ``request_checksum_calculation=
"when_required"``: many S3-compatible servers reject boto3's default aws-chunked
trailing checksums.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config

from .net import free_port, wait_for_port

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


@dataclass
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    region: str
    process: subprocess.Popen[bytes] | None = None

    @classmethod
    def start(
        cls, log_dir: Path, env: dict[str, str] | None = None, host: str = "127.0.0.1"
    ) -> S3Server:
        """``env``: extra environment of moto's server (e.g. ``INITIAL_NO_AUTH_ACTION_COUNT``
        turns its IAM authentication on); ignored for an external endpoint. ``host``: the
        address it binds (the real node's bridge address makes it reachable from pods)."""
        endpoint = os.environ.get("DCHAT_TEST_S3_ENDPOINT")
        if endpoint:
            return cls(
                endpoint=endpoint,
                access_key=os.environ.get("DCHAT_TEST_S3_ACCESS_KEY", ""),
                secret_key=os.environ.get("DCHAT_TEST_S3_SECRET_KEY", ""),
                region=os.environ.get("DCHAT_TEST_S3_REGION", "us-east-1"),
            )
        port = free_port(host)
        moto = Path(sys.executable).with_name("moto_server")
        log = (log_dir / "moto.log").open("wb")
        process = subprocess.Popen(
            [str(moto), "-H", host, "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        try:
            wait_for_port(host, port, timeout=30)
        except TimeoutError:
            process.kill()
            raise
        return cls(
            endpoint=f"http://{host}:{port}",
            access_key="testing",
            secret_key="testing",  # moto accepts any credentials
            region="us-east-1",
            process=process,
        )

    def client(self, **config: Any) -> S3Client:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                retries={"max_attempts": 3, "mode": "standard"},
                **config,
            ),
        )

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

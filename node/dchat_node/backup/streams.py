"""Stream plumbing: hash what passes, compress on the way up, decompress on the way down.

- ``HashingReader`` wraps a readable; ``read(n)`` returns exactly ``n`` bytes until the end
  (s3transfer makes one part of each read, and a short part in the middle of a multipart
  upload is refused by S3), hashing and counting them.
- ``ProcessOutput`` reads a subprocess's stdout and, at its end, raises if the process
  failed: a dump that dies half-way must fail the upload (s3transfer then aborts the
  multipart upload), never complete it with a truncated object.
- ``VerifyingWriter`` is the download's sink: it hashes and counts the compressed bytes
  and feeds them to a zstd decompressor writing the local file. It has no ``seek``, so
  s3transfer writes the parts to it in order. A decompression error (a corrupted object)
  is remembered, not raised, so the checksum is still computed over the whole object and
  the error reported is the checksum mismatch on that key.
"""

from __future__ import annotations

import hashlib
import subprocess
import threading
from collections import deque
from typing import IO, Protocol, cast

import zstandard

from dchat_node.backup.errors import BackupError, one_line

READ_SIZE = 1024 * 1024

STOP = threading.Event()
"""Set when the process is told to stop (SIGTERM: the backup Job's pod deleted or evicted).
Upload streams then fail their next read and ``S3Store.upload`` cancels the transfer, so
the multipart upload is aborted and no manifest is written within the pod's grace period."""

STOPPED = "stopped by SIGTERM (the backup's pod was deleted or evicted)"


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class Writable(Protocol):
    def write(self, data: bytes, /) -> int: ...


class HashingReader:
    def __init__(self, raw: Readable) -> None:
        self._raw = raw
        self._sha = hashlib.sha256()
        self.size = 0

    def read(self, size: int | None = -1) -> bytes:
        if STOP.is_set():
            raise BackupError(STOPPED)
        if size is None or size < 0:
            chunks = []
            while chunk := self._raw.read(READ_SIZE):
                chunks.append(chunk)
            data = b"".join(chunks)
        else:
            buf = bytearray()
            while len(buf) < size:
                chunk = self._raw.read(size - len(buf))
                if not chunk:
                    break
                buf += chunk
            data = bytes(buf)
        self._sha.update(data)
        self.size += len(data)
        return data

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()


class ProcessOutput:
    """stdout of ``process``; stderr is collected by a thread (its last lines kept)."""

    def __init__(self, process: subprocess.Popen[bytes], what: str) -> None:
        assert process.stdout is not None
        assert process.stderr is not None
        self._process = process
        self._stdout: IO[bytes] = process.stdout
        self._what = what
        self._stderr: deque[str] = deque(maxlen=20)
        self._reader = threading.Thread(
            target=self._drain, args=(process.stderr,), name=f"{what}-stderr", daemon=True
        )
        self._reader.start()

    def _drain(self, stream: IO[bytes]) -> None:
        for line in stream:
            self._stderr.append(line.decode("utf-8", "replace").rstrip())

    def stderr_tail(self) -> str:
        self._reader.join(timeout=5)
        lines = [ln for ln in self._stderr if ln.strip()]
        return one_line(" | ".join(lines[-3:])) if lines else "no message"

    def read(self, size: int = -1, /) -> bytes:
        data = self._stdout.read(size)
        if not data:
            code = self._process.wait()
            if code != 0:
                raise BackupError(f"{self._what} failed (exit {code}): {self.stderr_tail()}")
        return data

    def stop(self) -> None:
        """Kill the process if it still runs (the upload failed) and reap it."""
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait()
        self._stdout.close()


def compressing_reader(source: Readable, *, level: int = 3, threads: int = -1) -> Readable:
    """zstd (multi-threaded; ``threads=-1``: one worker per CPU) over ``source``."""
    compressor = zstandard.ZstdCompressor(level=level, threads=threads, write_checksum=True)
    reader: Readable = compressor.stream_reader(cast("IO[bytes]", source), read_size=READ_SIZE)
    return reader


class VerifyingWriter:
    def __init__(self, sink: IO[bytes]) -> None:
        self._sha = hashlib.sha256()
        self.size = 0
        self._sink = sink
        self._decompressor = zstandard.ZstdDecompressor().stream_writer(
            sink, write_size=READ_SIZE, closefd=False
        )
        self.decompress_error: str | None = None

    def write(self, data: bytes) -> int:
        if STOP.is_set():
            raise BackupError(STOPPED)  # fails the download: nothing touches the target
        self._sha.update(data)
        self.size += len(data)
        if self.decompress_error is None:
            try:
                self._decompressor.write(data)
            except zstandard.ZstdError as exc:
                self.decompress_error = one_line(str(exc), 200)
        return len(data)

    def finish(self) -> None:
        if self.decompress_error is None:
            try:
                self._decompressor.flush()  # type: ignore[no-untyped-call]
            except zstandard.ZstdError as exc:
                self.decompress_error = one_line(str(exc), 200)
        self._sink.flush()

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()

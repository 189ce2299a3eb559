"""Backups of the node's database to S3, and restores (``dchat backup ...``).

Independent of the chat domain and the API (an import-linter contract keeps it so): it
uses the node's config and storage (for ``dchat verify``) only. The serving node never
imports it; boto3 and zstandard load only when a backup command runs.

CONTRACT with the operator (which runs these commands in Jobs and sidecars of the node
image; keep both halves to it):

Commands (same ``--config`` handling as the other subcommands; the database is the node's,
from ``DATABASE_URL`` / ``DATABASE_URL_FILE`` or the config file, exactly as ``dchat
verify`` gets it)::

    dchat backup create  --name NAME
    dchat backup restore --name NAME | --latest  [--work-dir DIR] [--jobs N] [--replace]
    dchat backup verify  --name NAME | --latest  [--work-dir DIR] [--jobs N]
    dchat backup delete  --name NAME
    dchat backup list

- ``create``: PostgreSQL: ``pg_dump --format=custom --compress=0`` of an exported
  snapshot, zstd, SHA-256, streamed into a multipart upload (no local copy); row counts per
  table of the node's schema from the same snapshot. SQLite: an online-backup-API copy in
  the work directory, zstd, upload. Then ``manifest.json``, last. An existing complete
  backup of that name is refused. SIGTERM cancels the transfer, aborts the multipart
  upload and fails with ``stopped by SIGTERM`` (no manifest).
- ``restore``: refuses a non-empty target (PostgreSQL: any table in its schema; SQLite: the
  file exists). PostgreSQL: streams the object from S3 (parallel ranged GETs, hashed in
  order, zstd) through ``pg_restore -f -`` into psql, in ONE transaction that commits only
  after the object's size and SHA-256 and every table's row count matched the manifest; any
  failure (``checksum mismatch on <key>``, ``pg_restore failed``, a row count) rolls back,
  leaving the target as it was (``dchat_node.backup.pgstream``); then the node's own ``dchat
  verify`` checks. ``--jobs N``: processes per index build (N - 1 parallel maintenance
  workers). SQLite: downloads into ``--work-dir`` (default ``$TMPDIR``) while hashing,
  refuses with ``checksum mismatch on <key>`` before touching the target, checks row
  counts, ``integrity_check`` and ``dchat verify``; the file appears only after it passed.
  ``--replace`` (the node stopped) restores over a non-empty target instead, atomically:
  PostgreSQL drops the schema's views, tables and sequences inside that same transaction;
  SQLite renames the checked file over the old one (its WAL and Litestream state removed
  first). SIGTERM fails the download and rolls the load back (``stopped by SIGTERM``).
- ``verify``: the same restore into a throw-away target, then dropped: PostgreSQL a
  temporary database ``dchat_verify_<random>`` on the same server (the role needs
  CREATEDB, else it fails saying so), SQLite a temporary file.
- ``delete``: the manifest first (a half-deleted backup is never complete), then the other
  objects, then any unfinished multipart upload under the backup.
- ``list``: the complete backups (those with a manifest) under the prefix, newest first;
  ``incomplete`` names the folders without one.

Environment:

=================================  ===========================================================
``DCHAT_BACKUP_BUCKET``            required: the S3 bucket
``DCHAT_BACKUP_PREFIX``            ``""`` or ending in ``/``; the operator passes
                                   ``<spec prefix><namespace>/<cluster>/``
``DCHAT_BACKUP_REGION``            default ``us-east-1``
``DCHAT_BACKUP_ENDPOINT``          optional ``http(s)://`` URL of an S3-compatible store (path
                                   style; boto3's CRC checksums only when required)
``DCHAT_BACKUP_SSE``               optional ``AES256`` or ``aws:kms``
``DCHAT_BACKUP_KMS_KEY_ID``        optional, only with ``aws:kms``
``DCHAT_BACKUP_CLUSTER``           the cluster name written into the manifest (default dchat)
``DCHAT_BACKUP_CREDENTIALS_DIR``   default ``/etc/dchat/secrets/s3``: a mounted Secret with
                                   files ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``
                                   (optional ``AWS_SESSION_TOKEN``); when the directory is
                                   absent, boto3's default chain (IRSA, instance role, env)
``DCHAT_BACKUP_PART_SIZE_MIB``     multipart part size, 5..5120, default 16
``DCHAT_BACKUP_CONCURRENCY``       parallel part transfers, 1..64, default 4
``DCHAT_BACKUP_ABORT_TIMEOUT_SECS`` how long a failed upload keeps trying to abort its
                                   multipart upload, default 30
``DCHAT_TERMINATION_LOG``          default ``/dev/termination-log`` (tests point it elsewhere)
=================================  ===========================================================

Missing or invalid values: exit 2, the error naming the variable.

Layout: ``s3://<bucket>/<prefix><name>/`` holds the data object (``dump.pgcustom.zst`` or
``dchat.db.zst``) and ``manifest.json`` (written last): ``formatVersion`` (1), ``cluster``,
``name``, ``engine`` (``postgres``|``sqlite``), ``serverVersion``, ``schemaVersion`` (the
node's ``schema_migrations``), ``createdAt``, ``completedAt``, ``objects`` ([{``key``
(relative to the backup's folder), ``size``, ``sha256``, ``compression``: zstd,
``content``}]), ``rowCounts`` ({table: rows}), ``tool``.

Result: exit 0 on success, 1 on failure, 2 on bad settings. The LAST line of stdout is one
JSON object, and the same JSON is written to ``/dev/termination-log`` when that file is
writable (cut to 4 KiB: ``rowCounts``/``backups`` are dropped first):

- success: ``{"ok": true, "command", "name", "location": "s3://<bucket>/<prefix><name>/",
  "size": bytes of the data objects, "sha256": hex of the data object (of the objects'
  hex digests concatenated when there are several), "engine", "serverVersion",
  "schemaVersion", "startedAt", "completedAt" (RFC 3339 UTC), "rowCounts": {...}}``;
  restore and verify add ``"verified": true`` and ``"detail"``; delete gives ``name``,
  ``location``, ``deletedObjects``; list gives ``location``, ``backups`` ([{name,
  location, engine, size, sha256, schemaVersion, startedAt, completedAt}], newest first)
  and ``incomplete``.
- failure: ``{"ok": false, "command", "name", "error": "<one line saying why>"}`` (restore
  and verify add ``"verified": false`` and ``"detail"``). Errors say: ``S3 unreachable``,
  ``access denied by S3``, ``no such bucket``, ``no complete backup named ...``, ``database
  unreachable``, ``checksum mismatch on <key>``, ``target not empty``, ``disk full``,
  ``pg_dump failed``/``pg_restore failed`` with their message, ``invalid settings: VAR: ...``.

Secrets (the database password, the S3 secret key) never appear in output or logs: the
password reaches pg_dump/pg_restore as ``PGPASSWORD``, and error texts are scrubbed.
Metrics are the operator's job; the CLI only reports.
"""

from __future__ import annotations

"""The ``dchat`` console script.

    dchat [--config PATH] [serve [--no-migrate]]   run the node (default command)
    dchat [--config PATH] check-config [--show]    validate config + files, do not start
                                                   (--show masks passwords and key-like
                                                   URL parameters, omits jwt_secret)
    dchat [--config PATH] migrate                  apply pending schema migrations
    dchat [--config PATH] verify                   database integrity check (schema,
                                                   engine checks, marketplace: events
                                                   replay, escrow balances, payments)
    dchat [--config PATH] backup create|restore|verify|delete|list ...
                                                   backups to S3 (see dchat_node.backup:
                                                   the environment, the JSON result)

Exit status: 0 ok; 1 runtime failure (database unreachable, port in use, verify found
problems); 2 bad configuration (one line per problem: ``section.key: what is wrong (from
where)``).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from dchat_node import __version__
from dchat_node.config import (
    DEFAULT_CONFIG_PATH,
    ConfigError,
    NodeConfig,
    load_config,
    render_shown_toml,
    secret_values,
)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2
MARKETPLACE_SCHEMA = 5  # the migration that creates the marketplace tables


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        type=Path,
        default=argparse.SUPPRESS,
        help=f"config.toml (default {DEFAULT_CONFIG_PATH}; environment variables override it)",
    )
    parser = argparse.ArgumentParser(prog="dchat", description="dchat node", parents=[common])
    parser.add_argument("--version", action="version", version=f"dchat-node {__version__}")
    parser.add_argument(
        "--no-migrate", action="store_true", help="do not apply migrations at start"
    )
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", parents=[common], help="run the node (default)")
    serve.add_argument("--no-migrate", action="store_true", help="do not apply migrations")
    check = sub.add_parser("check-config", parents=[common], help="validate and exit")
    check.add_argument(
        "--show", action="store_true", help="print the effective config (no secrets)"
    )
    sub.add_parser("migrate", parents=[common], help="apply pending migrations")
    sub.add_parser("verify", parents=[common], help="check database integrity and schema")
    from dchat_node.backup.command import add_parser as add_backup_parser

    add_backup_parser(sub, common)
    return parser


def _report_config_error(exc: ConfigError) -> int:
    print(f"dchat: invalid configuration ({len(exc.problems)} problems):", file=sys.stderr)
    for problem in exc.problems:
        print(f"  {problem}", file=sys.stderr)
    return EXIT_CONFIG


async def _migrate(config: NodeConfig) -> int:
    from dchat_node.storage import StorageError, create_storage

    storage = create_storage(config.database)
    try:
        await storage.open()
        applied = await storage.migrate()
        version = await storage.schema_version()
    except StorageError as exc:
        print(f"dchat migrate: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        await storage.close()
    names = ", ".join(f"{m.version:04d}_{m.name}" for m in applied) or "none"
    print(f"applied: {names}; schema version {version}")
    return EXIT_OK


async def _verify(config: NodeConfig) -> int:
    from dchat_node.storage import StorageError, create_storage
    from dchat_node.storage.sqlite import sqlite_path

    if config.database.engine == "sqlite":
        path = sqlite_path(config.database.url)
        if path != ":memory:" and not await asyncio.to_thread(Path(path).is_file):
            print(f"dchat verify: database file {path} does not exist", file=sys.stderr)
            return EXIT_FAILURE
    storage = create_storage(config.database)
    market = None
    try:
        await storage.open()
        problems = await storage.verify()
        version = await storage.schema_version()
        if version >= MARKETPLACE_SCHEMA:
            from dchat_node.marketplace.store import SqlMarketplaceStore
            from dchat_node.marketplace.verify import verify_marketplace

            market = await verify_marketplace(SqlMarketplaceStore(storage))
            problems += [f"marketplace: {p}" for p in market.problems]
    except StorageError as exc:
        print(f"dchat verify: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        await storage.close()
    if problems:
        print(f"dchat verify: {len(problems)} problems:", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"ok: {storage.engine} database, schema version {version}, integrity ok")
    if market is not None:
        held = ", ".join(f"{c} {v}" for c, v in market.held.items()) or "nothing"
        print(f"ok: marketplace, {market.purchases} purchases replay, escrow holds {held}")
    return EXIT_OK


def _serve(config: NodeConfig, *, migrate: bool) -> int:
    from dchat_node.observability.logging import configure_logging
    from dchat_node.server import run_node
    from dchat_node.storage import StorageError

    configure_logging(config.logging, secrets=secret_values(config))
    try:
        asyncio.run(run_node(config, migrate=migrate))
    except ConfigError as exc:
        return _report_config_error(exc)
    except StorageError as exc:
        print(f"dchat: storage failure at startup: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except OSError as exc:
        print(f"dchat: cannot start: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    config_path: Path | None = getattr(args, "config", None)
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        return _report_config_error(exc)
    command = args.command or "serve"
    if command == "check-config":
        from dchat_node.server import preflight

        problems = preflight(config)
        if problems:
            return _report_config_error(ConfigError(problems))
        if args.show:
            print(render_shown_toml(config), end="")
        source = config_path or DEFAULT_CONFIG_PATH
        print(f"config ok: {source} (storage {config.database.engine})", file=sys.stderr)
        return EXIT_OK
    if command == "migrate":
        return asyncio.run(_migrate(config))
    if command == "verify":
        return asyncio.run(_verify(config))
    if command == "backup":
        from dchat_node.backup.command import run as run_backup

        return run_backup(args, config)
    return _serve(config, migrate=not args.no_migrate)


if __name__ == "__main__":
    sys.exit(main())

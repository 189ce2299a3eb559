"""Argument parsing and dispatch of ``kubectl dchat``.

Design: argparse, one subcommand per command; the connection options (``--kubeconfig``,
``--context``, ``-n/--namespace``) are accepted before or after the subcommand, as kubectl
accepts its flags. Every command is a function of (Kube, args) returning its exit
code; ``main`` maps failures to the documented codes and prints one ``error:`` line on stderr
(the apiserver's own message for a refused request). Exit codes: ``EXIT_OK`` 0,
``EXIT_FAILURE`` 1 (a failed or timed-out operation, an unhealthy cluster, an object not
found, an API error), ``EXIT_USAGE`` 2 (bad arguments: argparse's own code). ``diff`` uses 1
for "changes found", as ``kubectl diff`` does.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from dchat_operator.plugin import actions, backups, diff, doctor, status
from dchat_operator.plugin.kube import ConfigError, Kube, KubeError, kubeconfig_files
from dchat_operator.plugin.output import emit_json

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
Command = Callable[[Kube, argparse.Namespace], int]


def _connection(parser: argparse.ArgumentParser, suppress: bool) -> None:
    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    parser.add_argument(
        "--kubeconfig",
        default=default(None),
        help="kubeconfig file(s) (default: $KUBECONFIG, else ~/.kube/config)",
    )
    parser.add_argument(
        "--context", default=default(None), help="kubeconfig context (default: current)"
    )
    parser.add_argument(
        "-n",
        "--namespace",
        default=default(None),
        help="namespace (default: the context's, else default)",
    )


def _positive(value: str) -> float:
    number = float(value)
    if number <= 0:
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return number


def _replicas(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < 0:
        raise argparse.ArgumentTypeError("replicas cannot be negative")
    return number


def _wait(p: argparse.ArgumentParser, timeout: float, default_wait: bool = False) -> None:
    if default_wait:
        p.add_argument(
            "--no-wait", dest="wait", action="store_false", help="do not wait for the result"
        )
        p.set_defaults(wait=True)
    else:
        p.add_argument("--wait", action="store_true", help="wait for the result, with progress")
    p.add_argument(
        "--timeout",
        type=_positive,
        default=timeout,
        help=f"seconds to wait at most (default {timeout:.0f})",
    )


def _output(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", choices=("text", "json"), default="text", help="output format")


def _status(kube: Kube, args: argparse.Namespace) -> int:
    try:
        snapshot = status.gather(kube, args.cluster)
    except status.NotFound as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    if args.output == "json":
        emit_json({**snapshot, "healthy": status.cluster_ok(snapshot)})
    else:
        print(status.render(snapshot, dt.datetime.now(dt.UTC)), end="")
    return EXIT_OK if status.cluster_ok(snapshot) else EXIT_FAILURE


def _paused(section: str, paused: bool) -> Command:
    def run(kube: Kube, args: argparse.Namespace) -> int:
        return actions.cmd_set_paused(kube, args, section, paused)

    return run


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="kubectl dchat",
        description="Operate dchat clusters through the dchat operator's custom resources.",
        epilog="Exit codes: 0 ok; 1 failure, timeout or unhealthy cluster (diff: changes "
        "found); 2 usage error (diff: error).",
    )
    _connection(top, suppress=False)
    common = argparse.ArgumentParser(add_help=False)
    _connection(common, suppress=True)
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, run: Command, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help_, description=help_)
        p.set_defaults(run=run)
        return p

    p = add("status", _status, "the cluster, its children and their health, as a tree")
    p.add_argument("cluster")
    _output(p)

    p = add("backup", backups.cmd_backup, "create a DchatBackup of the cluster")
    p.add_argument("cluster")
    p.add_argument("--verify", action="store_true", help="verify it after it completed")
    p.add_argument("--name", help="name of the DchatBackup (default <cluster>-manual-<time>)")
    _wait(p, 600)

    p = add("backups", backups.cmd_backups, "list the cluster's DchatBackups")
    p.add_argument("cluster")
    _output(p)

    p = add("restore", backups.cmd_restore, "restore a backup into a cluster or a new one")
    p.add_argument("backup")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--to", metavar="CLUSTER", help="existing cluster: its data is REPLACED")
    target.add_argument(
        "--new", metavar="NAME", help="new cluster with the backup's cluster's spec"
    )
    p.add_argument(
        "--database-secret",
        metavar="SECRET[:KEY]",
        help="with --new for PostgreSQL: the URL of the new, empty database (key default url)",
    )
    _wait(p, 900)

    p = add("rollback", actions.cmd_rollback, "roll back to the previous good revision")
    p.add_argument("cluster")
    _wait(p, 120, default_wait=True)

    for name, section, paused, what in (
        ("pause-rollout", "rollout", True, "hold rollouts (spec.rollout.paused: true)"),
        ("resume-rollout", "rollout", False, "resume rollouts (spec.rollout.paused: false)"),
        ("pause-bridge", "bridge", True, "pause the bridge (spec.bridge.paused: true)"),
        ("resume-bridge", "bridge", False, "resume the bridge (spec.bridge.paused: false)"),
    ):
        p = add(name, _paused(section, paused), what)
        p.add_argument("cluster")
        _wait(p, 120)

    p = add("scale", actions.cmd_scale, "set the number of node pods (scale subresource)")
    p.add_argument("cluster")
    p.add_argument("replicas", type=_replicas)
    _wait(p, 300)

    p = add("promote", actions.cmd_promote, "Patroni switchover to a standby member")
    p.add_argument("cluster")
    p.add_argument("member", help="the Patroni member (Pod name) to promote")
    _wait(p, 120, default_wait=True)

    p = add("diff", diff.cmd_diff, "what applying a file would change (server-side dry run)")
    p.add_argument("file", help="YAML file, - for stdin")
    p.add_argument("--field-manager", default="kubectl", help="field manager of the dry-run apply")
    p.add_argument("--force-conflicts", action="store_true", help="take fields other managers own")

    p = add("doctor", doctor.cmd_doctor, "check everything the cluster depends on")
    p.add_argument("cluster")
    p.add_argument(
        "--operator-namespace",
        default="dchat-system",
        help="where the operator runs (default dchat-system)",
    )
    _output(p)
    return top


def run(args: argparse.Namespace, kubeconfig: list[Path]) -> int:
    kube = Kube.connect(kubeconfig, args.context, args.namespace)
    command: Command = args.run
    return command(kube, args)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return run(args, kubeconfig_files(args.kubeconfig))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
    except KubeError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
    except KeyboardInterrupt:
        return 130
    return EXIT_FAILURE

"""Command line: ``mlsvc-discover discover [--once] [--dry-run]`` and ``validate-config``.

Exit codes are named in :mod:`mlsvc_discover._exit` (documented in the README and tested). On
SIGINT or SIGTERM during ``--once`` the cycle stops after the write in flight, gets
``schedule.grace_period`` to get there, and the process is gone at most a few
seconds after that, whatever a remote does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import threading
from collections.abc import Sequence

from mlsvc_discover import __version__
from mlsvc_discover._errors import ConfigError, StateError, StateLockedError
from mlsvc_discover._exit import (
    EXIT_CONFIG,
    EXIT_INTERRUPTED,
    EXIT_LOCKED,
    EXIT_OK,
    EXIT_PARTIAL,
    exit_by_signal,
)
from mlsvc_discover._logging import configure_logging, redact
from mlsvc_discover._process import HARD_EXIT_MARGIN, arm_watchdog, exit_leaving_stuck_threads, run
from mlsvc_discover.config import AgentConfig, load_config
from mlsvc_discover.report import Report

__all__ = ["EXIT_CONFIG", "EXIT_LOCKED", "EXIT_OK", "EXIT_PARTIAL", "main"]

log = logging.getLogger(__name__)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="mlsvc-discover",
        description="Discover MLflow and SageMaker ML model services and register them in OpenMetadata.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    config_help = "config file (default: $MLSVC_DISCOVER_CONFIG)"

    d = sub.add_parser("discover", help="run cycles: forever on the schedule, or once with --once")
    d.add_argument("--config", "-c", help=config_help)
    d.add_argument("--once", action="store_true", help="run one cycle and exit (cron, CI, jobs)")
    d.add_argument("--dry-run", action="store_true", help="plan only: print the plan, write nothing")
    d.add_argument("--output", choices=("text", "json"), default="text", help="report format (default text)")

    v = sub.add_parser("validate-config", help="check the config and print it resolved, secrets redacted")
    v.add_argument("--config", "-c", help=config_help)
    v.add_argument("--output", choices=("yaml", "json"), default="yaml", help="output format (default yaml)")
    return parser


def _validate_config(config: AgentConfig, output: str) -> int:
    from mlsvc_discover.agent import describe

    data = describe(config)
    if output == "json":
        print(json.dumps(data, indent=2))
    else:
        import yaml

        print(yaml.safe_dump(data, sort_keys=False), end="")
    return EXIT_OK


async def _once(config: AgentConfig, *, dry_run: bool, output: str) -> int:  # noqa: PLR0912, PLR0915 - the --once runner: signals, grace period, watchdog and state lock in one readable sequence
    from mlsvc_discover._progress import ProgressLine, wanted
    from mlsvc_discover.agent import Agent

    loop = asyncio.get_running_loop()
    grace = config.schedule.grace_period
    stop = asyncio.Event()
    force = asyncio.Event()
    received: list[signal.Signals] = []

    def on_signal(sig: signal.Signals) -> None:
        if received:
            log.warning("received %s again: cancelling the cycle now", sig.name)
            force.set()
            return
        received.append(sig)
        log.warning("received %s: stopping after the write in flight (grace period %gs)", sig.name, grace)
        stop.set()
        arm_watchdog(grace + HARD_EXIT_MARGIN, exit_by_signal(sig), f"the cycle stopped by {sig.name}")

    def on_hangup() -> None:
        log.info("received SIGHUP: nothing to reload in --once; ignored")

    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    for sig in handled[:2]:
        loop.add_signal_handler(sig, on_signal, sig)
    loop.add_signal_handler(signal.SIGHUP, on_hangup)
    progress = None
    if wanted(sys.stderr, output):
        progress = ProgressLine(sys.stderr, [d.name for d in config.discoverers if d.enabled])
    agent = Agent(config)
    if progress is not None:
        agent.set_progress(progress)
    try:
        # While the progress line is up, log records erase it first and redraw it after.
        stream = progress.log_stream if progress is not None else None
        configure_logging(config.logging.level, config.logging.format, agent.secrets(), stream=stream)
        if not dry_run:
            try:
                agent.claim_state()
            except StateLockedError as exc:
                print(f"mlsvc-discover: {exc}", file=sys.stderr)
                return EXIT_LOCKED
            except StateError as exc:
                print(f"mlsvc-discover: {exc}", file=sys.stderr)
                return EXIT_PARTIAL
        report = Report()
        cycle = asyncio.create_task(agent.run_once(dry_run=dry_run, stop=stop, report=report))
        stopping = asyncio.ensure_future(stop.wait())
        forcing = asyncio.ensure_future(force.wait())
        try:
            await asyncio.wait({cycle, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not cycle.done():
                await asyncio.wait({cycle, forcing}, timeout=grace, return_when=asyncio.FIRST_COMPLETED)
            if not cycle.done():
                cycle.cancel()
                await asyncio.wait({cycle}, timeout=2)
        finally:
            stopping.cancel()
            forcing.cancel()
        if cycle.done() and not cycle.cancelled():
            report = cycle.result()
        else:
            report.interrupted = True
            planned = {c.name for c in (*report.plan.writes, *report.plan.delete)} if report.plan else set()
            report.not_applied = sorted(planned - set(report.applied))
    finally:
        if progress is not None:
            progress.close()
            configure_logging(config.logging.level, config.logging.format, agent.secrets())
        await agent.aclose()
        for sig in handled:
            with contextlib.suppress(ValueError, RuntimeError):
                loop.remove_signal_handler(sig)
    text = report.to_json() if output == "json" else report.render_text()
    print(redact(text, agent.secrets()))
    if received:
        print(f"mlsvc-discover: stopped by {received[0].name}", file=sys.stderr)
        return exit_by_signal(received[0])
    return report.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure_logging()
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"mlsvc-discover: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    from mlsvc_discover.agent import config_secrets

    # The configured format and secrets from here on: the long-running mode sets up its own
    # logging only once its agent exists, and lines logged before (asyncio, APScheduler's
    # triggers) would otherwise come out as text in a JSON log, redacted by pattern only.
    configure_logging(config.logging.level, config.logging.format, config_secrets(config))
    if args.command == "validate-config":
        return _validate_config(config, args.output)
    before = set(threading.enumerate())
    if args.once or args.dry_run:
        try:
            code = run(_once(config, dry_run=args.dry_run, output=args.output))
        except KeyboardInterrupt:
            print("mlsvc-discover: interrupted", file=sys.stderr)
            code = EXIT_INTERRUPTED
    else:
        from mlsvc_discover.daemon import run_forever

        code = run_forever(config, config_path=args.config)
    # A call abandoned at the cycle deadline may still block a worker thread; it must not hold the exit.
    exit_leaving_stuck_threads(code, before)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

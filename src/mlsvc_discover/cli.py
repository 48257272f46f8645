"""Command line: ``mlsvc-discover discover [--once] [--dry-run]`` and ``validate-config``.

Exit codes (documented in the README and tested):

- 0: everything done (or, for ``validate-config``, the config is valid);
- 1: partial failure: a discoverer, a probe or some writes failed, or OpenMetadata was
  unreachable; everything else was applied;
- 2: bad config or usage; nothing was contacted;
- 130: interrupted (SIGINT) during ``--once``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence

from mlsvc_discover import __version__
from mlsvc_discover._errors import ConfigError
from mlsvc_discover._exit import EXIT_CONFIG, EXIT_INTERRUPTED, EXIT_OK, EXIT_PARTIAL
from mlsvc_discover._logging import configure_logging, redact
from mlsvc_discover.config import AgentConfig, load_config

__all__ = ["EXIT_CONFIG", "EXIT_OK", "EXIT_PARTIAL", "main"]


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
    from mlsvc_discover.controller import describe

    data = describe(config)
    if output == "json":
        print(json.dumps(data, indent=2))
    else:
        import yaml

        print(yaml.safe_dump(data, sort_keys=False), end="")
    return EXIT_OK


async def _once(config: AgentConfig, *, dry_run: bool, output: str) -> int:
    from mlsvc_discover.controller import Agent

    async with Agent(config) as agent:
        configure_logging(config.logging.level, config.logging.format, agent.secrets())
        report = await agent.run_once(dry_run=dry_run)
    text = report.to_json() if output == "json" else report.render_text()
    print(redact(text, agent.secrets()))
    return report.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure_logging()
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"mlsvc-discover: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    from mlsvc_discover.controller import config_secrets

    # The configured format and secrets from here on: the long-running mode sets up its own
    # logging only once its agent exists, and lines logged before (asyncio, APScheduler's
    # triggers) would otherwise come out as text in a JSON log, redacted by pattern only.
    configure_logging(config.logging.level, config.logging.format, config_secrets(config))
    if args.command == "validate-config":
        return _validate_config(config, args.output)
    if args.once or args.dry_run:
        try:
            return asyncio.run(_once(config, dry_run=args.dry_run, output=args.output))
        except KeyboardInterrupt:
            print("mlsvc-discover: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
    from mlsvc_discover.daemon import run_forever

    return run_forever(config)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

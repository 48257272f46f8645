"""Run the stand-in by hand for demos::

python -m testing.openmetadata --port 8585 --token TOKEN [--bulk]
"""

from __future__ import annotations

import argparse
import time

from testing.openmetadata._common import Principal
from testing.openmetadata.server import OpenMetadataStandIn


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve a fake OpenMetadata ML model service API for demos.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8585, help="port to bind (default 8585, 0 for any)")
    parser.add_argument("--token", action="append", required=True, help="bearer token of a bot (repeatable)")
    parser.add_argument("--human-token", action="append", default=[], help="bearer token of a person (secrets masked)")
    parser.add_argument("--bulk", action="store_true", help="serve PUT .../bulk (no released server has it)")
    parser.add_argument("--no-bulk", action="store_true", help="no bulk route, like upstream (the default)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every answer")
    args = parser.parse_args(argv)
    tokens = {t: Principal("ingestion-bot", is_bot=True) for t in args.token}
    tokens.update({t: Principal("admin", is_bot=False) for t in args.human_token})
    standin = OpenMetadataStandIn(bulk_enabled=args.bulk and not args.no_bulk, tokens=tokens, latency=args.latency)
    standin.start(args.host, args.port)
    print(standin.base_url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        standin.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

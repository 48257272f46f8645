"""The OpenMetadata stand-in as a child process driven by a line protocol on stdin/stdout.

The stand-in is a threaded stdlib server that validates every body against the JSON Schemas:
real CPU work that, in the agent's own process, would take the GIL from the agent and make
its cycle look slower than it is. Commands (one per line, one answer line each):

- ``fresh``: stop the current server, start an empty one, answer its base URL;
- ``stats``: answer JSON counts of the requests seen (lists, single PUTs, bulk PUTs, other);
- ``reset``: clear the request log, answer ``ok``.

End of stdin stops the server and the process.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
from typing import Any

from testing.openmetadata import SERVICES_PATH, OpenMetadataStandIn, Principal


def _stats(standin: OpenMetadataStandIn) -> dict[str, Any]:
    lists = puts = bulks = other = 0
    bulk_items = 0
    statuses: dict[str, int] = {}
    for r in standin.find():
        statuses[str(r.status)] = statuses.get(str(r.status), 0) + 1
        if r.method == "GET" and r.path == SERVICES_PATH:
            lists += 1
        elif r.method == "PUT" and r.path == SERVICES_PATH:
            puts += 1
        elif r.method == "PUT" and r.path == SERVICES_PATH + "/bulk":
            bulks += 1
            bulk_items += len(r.body) if isinstance(r.body, list) else 0
        else:
            other += 1
    return {
        "total": lists + puts + bulks + other,
        "list": lists,
        "put": puts,
        "bulk": bulks,
        "bulk_items": bulk_items,
        "writes": puts + bulks,
        "other": other,
        "statuses": statuses,
        "services": len(standin.services),
        "internal_errors": len(standin.internal_errors),
        # This whole process is the server: its CPU seconds say whether the server was the bottleneck.
        "server_cpu": _cpu(),
    }


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every answer")
    parser.add_argument("--no-bulk", action="store_true", help="answer 405 on PUT .../bulk, like upstream")
    parser.add_argument("--token", required=True, help="bearer token of the bot")
    parser.add_argument(
        "--tag",
        action="append",
        default=["mlsvc-discover.default"],
        help="tag that exists on a fresh server (the naive script does not create the ownership tag it writes)",
    )
    parser.add_argument(
        "--validate-responses",
        action="store_true",
        help="check every answer against the schemas (the tests do; off by default here, as that check is "
        "the stand-in's own CPU cost, not the server's nor the agent's)",
    )
    args = parser.parse_args(argv)
    tokens = {args.token: Principal("ingestion-bot", is_bot=True)}
    standin: OpenMetadataStandIn | None = None
    try:
        for line in sys.stdin:
            command = line.strip()
            if command == "fresh":
                if standin is not None:
                    standin.stop()
                standin = OpenMetadataStandIn(
                    bulk_enabled=not args.no_bulk,
                    tokens=tokens,
                    latency=args.latency,
                    validate_responses=args.validate_responses,
                )
                standin.start()
                for tag in args.tag:
                    standin.add_tag(tag)
                answer = standin.base_url
            elif command == "stats" and standin is not None:
                answer = json.dumps(_stats(standin))
            elif command == "reset" and standin is not None:
                standin.reset_log()
                answer = "ok"
            else:
                answer = json.dumps({"error": f"unknown command {command!r}"})
            sys.stdout.write(answer + "\n")
            sys.stdout.flush()
    finally:
        if standin is not None:
            standin.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``moto_server`` with an adjustable latency added to every AWS call, to stand in for AWS's round trip.

Loopback moto answers in about a millisecond of network time but several of CPU, all in one
Python process; real AWS API calls take tens of milliseconds, mostly waiting. Sleeping in the
request thread (werkzeug serves each request in its own thread) adds waiting without adding
CPU, so concurrency in the client can overlap it as it would against AWS.

``POST /bench-latency`` with a number of seconds as the body changes the latency at run time,
so one seeded moto serves the runs with and without it. Everything else is moto_server's app
behind the test suite's AWS fake (``testing/aws_fake.py``), which serves SageMaker's
managed-MLflow calls that moto lacks; the latency applies to those too.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterable
from typing import Any

from moto.moto_server.werkzeug_app import MotoRequestHandler
from werkzeug.serving import run_simple

from testing.aws_fake import app_with_fake

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
CONTROL_PATH = "/bench-latency"


def with_latency(app: WsgiApp, initial: float) -> WsgiApp:
    latency = [initial]

    def delayed(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == CONTROL_PATH:
            size = int(environ.get("CONTENT_LENGTH") or 0)
            latency[0] = float(environ["wsgi.input"].read(size) or b"0")
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [str(latency[0]).encode()]
        # moto's own control API (reset, seeding checks) stays fast; only AWS calls pay the round trip.
        if latency[0] > 0 and not path.startswith("/moto-api"):
            time.sleep(latency[0])
        return app(environ, start_response)

    return delayed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="port on 127.0.0.1")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every AWS call")
    args = parser.parse_args(argv)
    app = app_with_fake()
    run_simple(
        "127.0.0.1",
        args.port,
        with_latency(app, args.latency),
        threaded=True,
        request_handler=MotoRequestHandler,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

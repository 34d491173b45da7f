"""Serve a live, read-only progress page for a results database.

Shows every run (fingerprint, train, ...): per stage files done/total, audio hours,
throughput over time, ETA, batch sizes and device memory per actor, the error list,
and training loss curves; links to Ray's dashboard when the run recorded one.
Bound to 127.0.0.1 unless --host is given (with a warning on stderr when that reaches beyond
this machine); requests are answered only when their Host header is a loopback name, the --host
address or an --allow-host name, which defeats DNS rebinding. The database is opened read-only; when
the file does not exist yet the page says so and waits for it to appear.
"""
from __future__ import annotations

import argparse

__all__ = ["HELP", "add_arguments", "run"]

HELP = "serve a live progress page for a results database (read-only)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", default="results/chromaray.db",
                        help="SQLite results database written by the jobs (default: %(default)s)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface to listen on (default: %(default)s, this machine only; "
                             "0.0.0.0 exposes the page to the network)")
    parser.add_argument("--port", type=int, default=8280, help="TCP port (default: %(default)s)")
    parser.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                        help="also answer requests whose Host header is NAME (repeatable; '*': any). "
                             "Only loopback names and the --host address are answered otherwise, "
                             "so a web page re-pointed at this machine (DNS rebinding) cannot read it")


def run(args: argparse.Namespace) -> int:
    from actors.errors import ChromarayError
    from pipeline.web.dashboard import serve

    if not 0 < args.port < 65536:
        raise ChromarayError(f"--port {args.port} is not a TCP port (1-65535)")
    serve(args.db, host=args.host, port=args.port, allow_hosts=args.allow_host)
    return 0


if __name__ == "__main__":
    from jobs.cli import run_as_module

    run_as_module("dashboard")

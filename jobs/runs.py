"""List the runs recorded in a results database, newest first: kind, status, start, when each
was last seen alive, host and pid, counts. A run whose process is gone (killed, crashed, the
machine rebooted) shows as ``interrupted``, even before the next run stores it so. Read-only.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
from typing import Any

__all__ = ["HELP", "add_arguments", "run"]

HELP = "list the runs of a results database; runs whose process died show as interrupted (--json)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", default="results/chromaray.db", help="SQLite results database (default: %(default)s)")
    parser.add_argument("--limit", type=int, default=20, help="newest N runs (default: %(default)s; 0: all)")
    parser.add_argument("--json", action="store_true", help="one JSON array of runs (times in ISO 8601 UTC)")


def _iso(t: dt.datetime | None) -> str | None:
    return t.replace(tzinfo=dt.timezone.utc).isoformat() if t is not None else None


def _short(t: dt.datetime | None) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S") if t is not None else "-"


def _ago(t: dt.datetime | None, now: dt.datetime) -> str:
    if t is None:
        return ""
    s = max(0, int((now - t).total_seconds()))
    return f"{s} s ago" if s < 120 else f"{s // 60} min ago" if s < 7200 else f"{s // 3600} h ago"


def run(args: argparse.Namespace) -> int:
    from actors.errors import ChromarayError
    from pipeline.store import list_runs, open_db, utcnow
    from pipeline.text import shown

    if args.limit < 0:
        raise ChromarayError(f"--limit {args.limit} is negative (0 lists every run)")
    engine = open_db(args.db, readonly=True)
    try:
        runs = list_runs(engine, limit=args.limit or None)
    finally:
        engine.dispose()
    if args.json:
        rows: list[dict[str, Any]] = [
            {k: _iso(v) if isinstance(v, dt.datetime) else v for k, v in r.items()} for r in runs]
        print(json.dumps(rows, indent=1))
        return 0
    if not runs:
        print(f"no runs in {shown(args.db)}")
        return 0
    now = utcnow()
    header = f"{'RUN':12}  {'KIND':11}  {'STATUS':11}  {'STARTED (UTC)':19}  {'LAST SEEN ALIVE (UTC)':30}  " \
             f"{'HOST:PID':24}  {'DONE/TOTAL':>11}  {'ERRORS':>6}  NAME"
    print(header)
    for r in runs:
        seen = r["last_seen_at"] if r["status"] in ("running", "interrupted") else r["finished_at"]
        seen_s = f"{_short(seen)} ({_ago(seen, now)})" if seen is not None else "-"
        where = f"{r['host'] or '?'}:{r['pid'] or '?'}" if r["host"] or r["pid"] else "-"
        counts = f"{r['n_done']}/{r['n_total']}"
        print(f"{r['id'][:12]:12}  {shown(r['kind'])[:11]:11}  {shown(r['status'])[:11]:11}  "
              f"{_short(r['started_at']):19}  {seen_s:30}  {shown(where)[:24]:24}  {counts:>11}  "
              f"{r['n_errors']:>6}  {shown(r['name'] or '')}")
    return 0


if __name__ == "__main__":
    from jobs.cli import run_as_module

    run_as_module("runs")

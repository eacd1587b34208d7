"""Per-request cost of the annotator loop, in process: CPU time, queries, SQL time, and a profile.

Run (after ``bench_queue.py`` has filled the database; this resets the queue the same way):
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench_queue \
        .venv/bin/python tests/benchmarks/profile_queue.py [--loops 200] [--profile var/bench/queue.prof]

Each loop is ``POST /api/v1/annotate/next`` then ``POST /api/v1/annotate/submit`` (accept) with a
``Token`` header, through Django's full WSGI handler and middleware (``django.test.Client``), DEBUG=0,
one persistent connection. It reports per request: wall ms, process CPU ms, queries, the wall time
spent inside the database driver, and the CPU of the PostgreSQL backend (when PostgreSQL runs on this
machine); with ``--profile`` a cProfile of the loops, summarised by area.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

# Areas of the profile: a frame belongs to the first area whose marker is in its file name.
AREAS = (
    ("psycopg (driver + wire)", "psycopg"),
    ("ORM (query build, rows → objects)", "django/db/"),
    ("DRF (request, auth, serializers, render)", "rest_framework/"),
    ("drf-spectacular", "drf_spectacular"),
    ("middleware (sessions, messages, csrf, whitenoise, …)", "middleware"),
    ("whitenoise", "whitenoise"),
    ("Django core (handler, urls, http)", "django/"),
    ("annotation app", "/annotation/"),
    ("webapp", "/webapp/"),
    ("logging", "logging/"),
    ("json", "json/"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--loops", type=int, default=200)
    parser.add_argument("--products", type=int, default=1_000_000)
    parser.add_argument("--profile", type=Path, default=None, help="write a cProfile here")
    parser.add_argument("--skip-setup", action="store_true", help="keep the queue as it is")
    args = parser.parse_args()

    from tests.benchmarks.bench_queue import _db_url, setup_people, setup_queue

    url = _db_url()
    os.environ.update(
        DJANGO_SETTINGS_MODULE="webapp.settings",
        DEBUG="0",
        SECRET_KEY="profile-only-secret-" + os.urandom(8).hex(),
        SECURE_SSL_REDIRECT="0",
        ALLOWED_HOSTS="testserver,127.0.0.1",
        LOG_LEVEL="ERROR",
        DATABASE_CONN_MAX_AGE="600",
    )
    if not args.skip_setup:
        setup_queue(url, args.products)
    tokens = setup_people(4)  # django.setup() happens here

    from django.db import connection
    from django.test import Client

    stats: dict[str, dict[str, float]] = {
        name: {"n": 0, "wall": 0.0, "cpu": 0.0, "queries": 0, "sql": 0.0} for name in ("next", "submit")
    }
    current: dict[str, Any] = {}

    def timer(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        t = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            current["queries"] += 1
            current["sql"] += time.perf_counter() - t

    clients = [Client(HTTP_AUTHORIZATION=f"Token {tok}") for tok in tokens]

    def call(name: str, client: Client, path: str, body: dict[str, Any] | None = None) -> Any:
        current.update(queries=0, sql=0.0)
        w, c = time.perf_counter(), time.process_time()
        if body is None:
            response = client.post(path)
        else:
            response = client.post(path, json.dumps(body), content_type="application/json")
        s = stats[name]
        s["wall"] += time.perf_counter() - w
        s["cpu"] += time.process_time() - c
        s["n"] += 1
        s["queries"] += current["queries"]
        s["sql"] += current["sql"]
        return response

    def loops(n: int, tag: str) -> None:
        for i in range(n):
            client = clients[i % len(clients)]
            r = call("next", client, "/api/v1/annotate/next")
            assert r.status_code == 200, r.content
            item = r.json()
            body: dict[str, Any] = {
                "assignment_id": item["id"],
                "seconds_spent": 3,
                "client_token": f"{tag}{i}",
            }
            if item["guess"] is None:
                body.update(verdict="correct", corrected_price="42.00")
            else:
                body.update(verdict="accept")
            r = call("submit", client, "/api/v1/annotate/submit", body)
            assert r.status_code == 200, r.content

    with connection.execute_wrapper(timer):
        loops(20, "warm")  # connections, first-call imports, caches
        for s in stats.values():
            s.update(n=0, wall=0.0, cpu=0.0, queries=0, sql=0.0)
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            backend = cursor.fetchone()[0]
        pg_start = _process_cpu_s(backend)
        profiler = cProfile.Profile() if args.profile else None
        if profiler:
            profiler.enable()
        loops(args.loops, "run")
        if profiler:
            profiler.disable()
        pg_end = _process_cpu_s(backend)

    result = {
        name: {
            "requests": int(s["n"]),
            "wall_ms": round(s["wall"] / s["n"] * 1000, 2),
            "cpu_ms": round(s["cpu"] / s["n"] * 1000, 2),
            "queries": round(s["queries"] / s["n"], 2),
            "sql_wall_ms": round(s["sql"] / s["n"] * 1000, 2),
        }
        for name, s in stats.items()
    }
    # The one PostgreSQL backend that served the loops (when it runs on this machine), per request
    # of either kind: PostgreSQL's share of the CPU, which the figures above leave out.
    result["postgres_cpu_ms_per_request"] = (  # type: ignore[assignment]
        None
        if pg_start is None or pg_end is None
        else round((pg_end - pg_start) / (2 * args.loops) * 1000, 2)
    )
    result["load_avg"] = [round(x, 2) for x in os.getloadavg()]  # type: ignore[assignment]
    print(json.dumps(result, indent=2))
    if profiler:
        args.profile.parent.mkdir(parents=True, exist_ok=True)
        profiler.dump_stats(args.profile)
        summarise(args.profile, total_requests=2 * args.loops)


def _process_cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) of a process on this machine; None if it is not here."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def summarise(path: Path, *, total_requests: int) -> None:
    """Own (tottime) profile time per area, per request."""
    st = pstats.Stats(str(path))
    per_area: dict[str, float] = {}
    total = 0.0
    for (filename, _line, _fn), (_cc, _nc, tottime, _ct, _callers) in st.stats.items():  # type: ignore[attr-defined]
        area = next((name for name, marker in AREAS if marker in filename), "other (stdlib, builtins)")
        per_area[area] = per_area.get(area, 0.0) + tottime
        total += tottime
    print(
        f"\nprofile: {total / total_requests * 1000:.2f} ms own time per request (profiler overhead included)"
    )
    for area, t in sorted(per_area.items(), key=lambda kv: -kv[1]):
        print(f"  {area:<55}{t / total_requests * 1000:>7.2f} ms  {t / total:>5.0%}")
    print("\ntop cumulative:")
    st.sort_stats("cumulative").print_stats(35)


if __name__ == "__main__":
    main()

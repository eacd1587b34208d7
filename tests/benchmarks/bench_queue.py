"""Work-queue load benchmark: 1,000,000 queued products, 50 scripted annotators over HTTP on loopback.

Run:
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench_queue \
        .venv/bin/python tests/benchmarks/bench_queue.py [--products 1000000] [--annotators 50] \
        [--duration 30] [--workers 4] [--threads 4] [--think-ms 0] [--client lean|httpx] \
        [--out var/bench/bench_queue.json]

The database named by DATABASE_URL is created if needed, migrated, and its annotation data is
TRUNCATED: give it one of its own. Setup is bulk SQL (``generate_series``): products, one guess each
(entropy drawn at random, 10% blind), one task each (overlap 1), 500 gold items, codebook v1 that
every annotator has acknowledged, and one API token per annotator. A rerun with the same
``--products`` keeps the catalogue and only resets the queue.

The server is production-style: ``gunicorn -w W --threads T webapp.wsgi`` with DEBUG=0 on 127.0.0.1
(``--keep-alive 75``, as behind a proxy: gunicorn's 2 s default drops idle annotators' connections).
The client is one asyncio process with one keep-alive connection per annotator (``--client lean``,
the default: HTTP/1.1 on asyncio streams, a fifth of httpx's CPU per request; ``--client httpx`` as
the benchmark ran before): each annotator
loops ``POST /api/v1/annotate/next`` then ``POST /api/v1/annotate/submit`` (70% accept, 25% correct
near the guess, 5% reject; blind items are corrected) until the duration is over, with an optional
think time. Every status is checked and every 200 body parsed. The first ``--warmup`` seconds
(default 5) are not measured (connections, first requests of each worker thread). Every request has
a 10 s timeout; each annotator stops after 100,000 loops. The server runs with
``ANNOTATION_GOLD_ACCURACY_MIN=0``: the script's random rejects would otherwise pause an unlucky
annotator mid-run (see ``start_server``).

Afterwards the database is checked: tasks with more than ``overlap`` annotations, a task leased twice
to one annotator, annotators with two live leases, claim counters that disagree with the rows, and
annotations the clients did not submit. Report: p50/p95/p99/max per endpoint, throughput, errors,
those counts, as a table and as JSON. Target (issue 4): p99 < 100 ms for next and submit, 0 errors,
0 duplicates. Client and server share the machine's cores: the JSON records how many there are, the
load average before the run, and the CPU each HTTP request cost the server (gunicorn's process group),
the client and PostgreSQL (its backends for the benchmark database, when it runs on this machine).
Per-request profile in process: ``tests/benchmarks/profile_queue.py``; figures in docs/perf-queue.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

GOLD_ITEMS = 500
CODEBOOK = "# Pricing codebook (benchmark)\n\n## Reject reasons\n- `not-a-product`: no sellable item\n"


def _db_url() -> str:
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith("postgres"):
        sys.exit("Set DATABASE_URL=postgres://…/bench_queue (a database of its own: it is truncated).")
    return url


def ensure_database(url: str) -> None:
    import psycopg

    parsed = urlparse(url)
    name = parsed.path.lstrip("/")
    admin = parsed._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


def _manage(*args: str, env: dict[str, str]) -> None:
    subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL
    )


def setup_queue(url: str, products: int) -> dict[str, float]:
    """Bulk SQL: catalogue + guesses + tasks (kept when the size matches), fresh queue state."""
    import psycopg

    timings: dict[str, float] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        have = conn.execute("SELECT count(*) FROM annotation_product WHERE source = 'bench'").fetchone()[0]
        t0 = time.perf_counter()
        conn.execute(
            "TRUNCATE annotation_annotation, annotation_resolvedlabel, annotation_assignment, "
            "annotation_annotatorstatus, annotation_codebookack, annotation_codebookversion CASCADE"
        )
        if have != products + GOLD_ITEMS:
            conn.execute("TRUNCATE annotation_task, annotation_guess, annotation_product CASCADE")
            conn.execute(
                """
                INSERT INTO annotation_product
                    (external_id, title, text, category, price, price_flag, split, source, extra,
                     created, updated)
                SELECT 'bench-' || g, 'Benchmark product ' || g,
                       'A sturdy benchmark product number ' || g || ', described plainly.',
                       'Tools', round((1 + random() * 900)::numeric, 2), '', 'pool', 'bench', '{}',
                       now(), now()
                FROM generate_series(1, %s) AS g
                """,
                [products + GOLD_ITEMS],
            )
            timings["products_s"] = time.perf_counter() - t0
            t1 = time.perf_counter()
            # Gold items: the last GOLD_ITEMS products; their guess is their true price (accept = right).
            conn.execute(
                """
                INSERT INTO annotation_guess (product_id, source, price, topk, entropy, created)
                SELECT id, 'baseline:mean',
                       CASE WHEN id > (SELECT max(id) FROM annotation_product) - %s
                            THEN price ELSE 100.00 END,
                       '[]', random() * 3, now()
                FROM annotation_product
                """,
                [GOLD_ITEMS],
            )
            timings["guesses_s"] = time.perf_counter() - t1
            t2 = time.perf_counter()
            conn.execute(
                """
                INSERT INTO annotation_task (product_id, guess_id, overlap, status, is_gold, gold_price,
                    gold_tolerance, is_blind, priority, claimed_count, completed_count, created)
                SELECT p.id, g.id, 1, 'open', p.id > m.max_id - %s,
                       CASE WHEN p.id > m.max_id - %s THEN p.price END,
                       CASE WHEN p.id > m.max_id - %s THEN 0.2 END,
                       p.id <= m.max_id - %s AND random() < 0.1, g.entropy, 0, 0, now()
                FROM annotation_product p JOIN annotation_guess g ON g.product_id = p.id,
                     (SELECT max(id) AS max_id FROM annotation_product) m
                """,
                [GOLD_ITEMS] * 4,
            )
            timings["tasks_s"] = time.perf_counter() - t2
        else:
            conn.execute(
                "UPDATE annotation_task SET claimed_count = 0, completed_count = 0, status = 'open', "
                "resolved_at = NULL WHERE claimed_count <> 0 OR completed_count <> 0 OR status <> 'open'"
            )
            timings["reset_s"] = time.perf_counter() - t0
        t3 = time.perf_counter()
        conn.execute("VACUUM ANALYZE annotation_task")
        conn.execute("ANALYZE annotation_assignment")
        conn.execute("ANALYZE annotation_product")
        timings["analyze_s"] = time.perf_counter() - t3
    return timings


def setup_people(n: int) -> list[str]:
    """n annotators with API tokens, codebook v1 acknowledged by all. Returns the tokens."""
    import django

    django.setup()
    from django.contrib.auth.models import User

    from annotation import services
    from webapp.roles import Role
    from webapp.services import user_create_with_role

    reviewer, _ = user_create_with_role(username="bench-reviewer", role=Role.REVIEWER, exist_ok=True)
    services.codebook_publish(author=reviewer, markdown=CODEBOOK)
    tokens = []
    for i in range(n):
        user, token = user_create_with_role(
            username=f"bench-annotator-{i}", role=Role.ANNOTATOR, with_token=True, exist_ok=True
        )
        services.codebook_acknowledge(annotator=user, version_number=1)
        tokens.append(token)
    assert User.objects.filter(username__startswith="bench-annotator-").count() >= n
    return tokens


def start_server(url: str, port: int, workers: int, threads: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "DEBUG": "0",
        "SECRET_KEY": "bench-only-secret-" + os.urandom(16).hex(),
        "SECURE_SSL_REDIRECT": "0",
        "ALLOWED_HOSTS": "127.0.0.1",
        "LOG_LEVEL": "ERROR",
        "DATABASE_CONN_MAX_AGE": "600",
        "DJANGO_SETTINGS_MODULE": "webapp.settings",
        # The scripted annotators reject 5% of items at random, gold included: at today's speed some
        # reach their 7th gold item with 3 wrong and are paused, and every later request of theirs is
        # a 403. That is the script's dice, not the server: gold is still served, answered, counted
        # and checked against this floor, which no annotator can fall under.
        "ANNOTATION_GOLD_ACCURACY_MIN": "0",
    }
    cmd = [
        str(Path(sys.executable).with_name("gunicorn")),
        "-w", str(workers), "--threads", str(threads), "-b", f"127.0.0.1:{port}",
        "--log-level", "warning", "--timeout", "60", "--keep-alive", "75", "webapp.wsgi",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True)
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/v1/annotate/progress", timeout=2).status_code in (
                401,
                403,
            ):
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    stop_server(proc)
    raise SystemExit("gunicorn did not answer within 60 s")


def server_cpu_s(proc: subprocess.Popen[bytes]) -> float:
    """CPU seconds (user + system) used so far by gunicorn's processes (its process group)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == proc.pid:  # field 5 of stat: the process group
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / tick


def postgres_cpu_s(url: str) -> float | None:
    """CPU seconds used so far by the PostgreSQL backends connected to the benchmark's database (their
    process title names it), when PostgreSQL runs on this machine; None otherwise."""
    name = urlparse(url).path.lstrip("/")
    tick = os.sysconf("SC_CLK_TCK")
    total, found = 0, False
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            title = (proc / "cmdline").read_bytes()
            if not title.startswith(b"postgres: ") or f" {name} ".encode() not in title:
                continue
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
        found = True
    return total / tick if found else None


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def _sink() -> dict[str, Any]:
    return {
        "next": [], "submit": [], "errors": [], "empty": 0, "submitted": 0,
        "verdicts": {"accept": 0, "correct": 0, "reject": 0},
    }  # fmt: skip


class Http11Error(Exception):
    """The connection failed or the server's answer was not well-formed HTTP/1.1."""


class LeanHttpClient:
    """A keep-alive HTTP/1.1 client on asyncio streams, for one annotator: ``Content-Length`` and
    chunked bodies, reconnects when the server closes. The benchmark client shares the machine's cores
    with the server; httpx cost 1.7 to 3 ms of CPU per request, this about a fifth of that
    (docs/perf-queue.md). Still real HTTP over loopback: every status and body is checked."""

    def __init__(self, base: str, headers: dict[str, str], timeout: float = 10.0) -> None:
        url = urlparse(base)
        self.host, self.port, self.timeout = url.hostname or "127.0.0.1", url.port or 80, timeout
        fixed = {"Host": f"{self.host}:{self.port}", "Accept": "application/json", **headers}
        self.head = "".join(f"{k}: {v}\r\n" for k, v in fixed.items()).encode("latin-1")
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        try:
            async with asyncio.timeout(self.timeout):
                return await self._post(path, body)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
            self.close()
            raise Http11Error(type(exc).__name__) from exc

    async def _post(self, path: str, body: bytes | None) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        extra = b"Content-Type: application/json\r\n" if body is not None else b""
        payload = body or b""
        self.writer.write(
            b"POST %s HTTP/1.1\r\n%s%sContent-Length: %d\r\n\r\n%s"
            % (path.encode(), self.head, extra, len(payload), payload)
        )
        status_line = await self.reader.readline()
        if not status_line.startswith(b"HTTP/1.1 "):
            raise ValueError(f"status line {status_line[:40]!r}")
        status = int(status_line[9:12])
        length, chunked, close = None, False, False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                close = b"close" in value.lower()
        if chunked:
            parts = []
            while size := int((await self.reader.readline()).split(b";")[0], 16):
                parts.append(await self.reader.readexactly(size))
                await self.reader.readexactly(2)
            await self.reader.readuntil(b"\r\n")
            content = b"".join(parts)
        elif length is not None:
            content = await self.reader.readexactly(length)
        elif status in (204, 304):
            content = b""
        else:  # a body delimited by closing the connection
            content, close = await self.reader.read(), True
        if close:
            self.close()
        return status, content

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


class HttpxClient:
    """The same interface on httpx (``--client httpx``), as the benchmark ran before."""

    def __init__(self, base: str, headers: dict[str, str], timeout: float = 10.0) -> None:
        import httpx

        self.client = httpx.AsyncClient(base_url=base, headers=headers, timeout=timeout)

    async def post(self, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        import httpx

        try:
            if body is None:
                r = await self.client.post(path)
            else:
                r = await self.client.post(path, content=body, headers={"Content-Type": "application/json"})
        except httpx.HTTPError as exc:
            raise Http11Error(type(exc).__name__) from exc
        return r.status_code, r.content

    async def aclose(self) -> None:
        await self.client.aclose()


async def annotator_loop(
    base: str,
    token: str,
    seed: int,
    times: tuple[float, float],
    think_s: float,
    sinks: tuple[dict[str, Any], dict[str, Any]],
    client_kind: str = "lean",
) -> None:
    """One scripted annotator. Loops before ``times[0]`` (warm-up) go to ``sinks[0]``, the rest to
    ``sinks[1]``; it stops at ``times[1]``."""
    warm_until, until = times
    rng = random.Random(seed)
    headers = {"Authorization": f"Token {token}"}
    client: LeanHttpClient | HttpxClient = (
        LeanHttpClient(base, headers) if client_kind == "lean" else HttpxClient(base, headers)
    )
    try:
        await _annotate(client, rng, seed, warm_until, until, think_s, sinks)
    finally:
        if isinstance(client, HttpxClient):
            await client.aclose()
        else:
            client.close()


async def _annotate(
    client: LeanHttpClient | HttpxClient,
    rng: random.Random,
    seed: int,
    warm_until: float,
    until: float,
    think_s: float,
    sinks: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    for i in range(100_000):
        now = time.monotonic()
        if now >= until:
            return
        out = sinks[0] if now < warm_until else sinks[1]
        t = time.perf_counter()
        try:
            status, content = await client.post("/api/v1/annotate/next")
        except Http11Error as exc:
            out["errors"].append(f"next: {exc}")
            continue
        out["next"].append(time.perf_counter() - t)
        if status == 204:
            out["empty"] += 1
            await asyncio.sleep(0.05)
            continue
        if status != 200:
            out["errors"].append(f"next: HTTP {status} {content[:120]!r}")
            continue
        item = json.loads(content)
        if not isinstance(item.get("id"), int) or "product" not in item:
            out["errors"].append(f"next: unexpected body {content[:120]!r}")
            continue
        roll = rng.random()
        body: dict[str, Any] = {
            "assignment_id": item["id"],
            "seconds_spent": 3.0,
            "client_token": f"{seed}-{i}",
        }
        guess = item["guess"]
        if roll < 0.05:
            body.update(verdict="reject", reason_code="not-a-product")
        elif guess is None or roll < 0.30:
            base_price = float(guess["price"]) if guess else rng.uniform(5, 500)
            body.update(verdict="correct", corrected_price=f"{base_price * rng.uniform(0.97, 1.03):.2f}")
        else:
            body.update(verdict="accept")
        if think_s:
            await asyncio.sleep(think_s)
        t = time.perf_counter()
        try:
            status, content = await client.post("/api/v1/annotate/submit", json.dumps(body).encode())
        except Http11Error as exc:
            out["errors"].append(f"submit: {exc}")
            continue
        out["submit"].append(time.perf_counter() - t)
        if status != 200:
            out["errors"].append(f"submit: HTTP {status} {content[:120]!r}")
        elif json.loads(content).get("assignment_id") != item["id"]:
            out["errors"].append(f"submit: unexpected body {content[:120]!r}")
        else:
            out["submitted"] += 1
            out["verdicts"][body["verdict"]] += 1


async def run_load(
    base: str, tokens: list[str], warmup: float, duration: float, think_s: float, client_kind: str = "lean"
) -> tuple[dict[str, Any], dict[str, Any], float]:
    """(warm-up results, measured results, measured seconds)."""
    warm, out = _sink(), _sink()
    start = time.monotonic()
    times = (start + warmup, start + warmup + duration)
    await asyncio.gather(
        *(
            annotator_loop(base, tok, k, times, think_s, (warm, out), client_kind)
            for k, tok in enumerate(tokens)
        )
    )
    return warm, out, time.monotonic() - times[0]


def check_database(url: str) -> dict[str, int]:
    import psycopg

    queries = {
        "tasks_over_overlap": """SELECT count(*) FROM (SELECT t.id FROM annotation_task t
            JOIN annotation_annotation a ON a.task_id = t.id WHERE NOT t.is_gold
            GROUP BY t.id, t.overlap HAVING count(*) > t.overlap) x""",
        "task_leased_twice_to_one_annotator": """SELECT count(*) FROM (SELECT task_id, annotator_id
            FROM annotation_assignment GROUP BY 1, 2 HAVING count(*) > 1) x""",
        "annotators_with_two_live_leases": """SELECT count(*) FROM (SELECT annotator_id
            FROM annotation_assignment WHERE status = 'live' GROUP BY 1 HAVING count(*) > 1) x""",
        "tasks_leased_to_two_at_once": """SELECT count(*) FROM (SELECT t.id FROM annotation_task t
            JOIN annotation_assignment s ON s.task_id = t.id AND s.status IN ('live', 'done')
            WHERE NOT t.is_gold GROUP BY t.id, t.overlap HAVING count(*) > t.overlap) x""",
        "claim_counter_drift": """SELECT count(*) FROM annotation_task t WHERE t.claimed_count <>
            (SELECT count(*) FROM annotation_assignment s
             WHERE s.task_id = t.id AND s.status IN ('live', 'done'))
            AND NOT t.is_gold AND t.id IN (SELECT task_id FROM annotation_assignment)""",
        "annotations": "SELECT count(*) FROM annotation_annotation",
        "resolved_labels": "SELECT count(*) FROM annotation_resolvedlabel",
        "annotators_paused": "SELECT count(*) FROM annotation_annotatorstatus WHERE paused",
    }
    with psycopg.connect(url) as conn:
        return {name: conn.execute(sql).fetchone()[0] for name, sql in queries.items()}


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--products", type=int, default=1_000_000)
    parser.add_argument("--annotators", type=int, default=50)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=4, help="gunicorn threads per worker")
    parser.add_argument("--think-ms", type=float, default=0.0, help="pause between next and submit")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of load before measuring")
    parser.add_argument(
        "--client",
        choices=("lean", "httpx"),
        default="lean",
        help="lean: keep-alive HTTP/1.1 on asyncio streams (default); httpx: as before",
    )
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "bench" / "bench_queue.json")
    args = parser.parse_args()
    if not 1 <= args.annotators <= 200 or not 1 <= args.duration <= 600 or not 0 <= args.warmup <= 60:
        sys.exit("--annotators must be 1..200, --duration 1..600 s and --warmup 0..60 s")

    url = _db_url()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    os.environ.setdefault("DEBUG", "1")  # setup only; the server runs with DEBUG=0
    ensure_database(url)
    _manage("migrate", "--noinput", env={**os.environ, "DATABASE_URL": url})
    t0 = time.perf_counter()
    timings = setup_queue(url, args.products)
    tokens = setup_people(args.annotators)
    timings["setup_total_s"] = time.perf_counter() - t0
    print(f"setup: {json.dumps({k: round(v, 1) for k, v in timings.items()})}", flush=True)

    import logging

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one log line per request would cost the client
    load_before = os.getloadavg()
    server = start_server(url, args.port, args.workers, args.threads)
    try:
        cpu_start, client_start = server_cpu_s(server), time.process_time()
        # The server's connections open during the warm-up (then persist): count them from the start.
        pg_start = postgres_cpu_s(url) or 0.0
        warm, out, elapsed = asyncio.run(
            run_load(
                f"http://127.0.0.1:{args.port}",
                tokens,
                args.warmup,
                args.duration,
                args.think_ms / 1000,
                args.client,
            )
        )
        server_cpu, client_cpu = server_cpu_s(server) - cpu_start, time.process_time() - client_start
        pg_end = postgres_cpu_s(url)
        pg_cpu = None if pg_end is None else pg_end - pg_start
    finally:
        stop_server(server)
    checks = check_database(url)

    rows = {}
    for endpoint in ("next", "submit"):
        values = out[endpoint]
        rows[endpoint] = {
            "requests": len(values),
            "per_s": round(len(values) / elapsed, 1),
            "p50_ms": round(_pct(values, 50), 1),
            "p95_ms": round(_pct(values, 95), 1),
            "p99_ms": round(_pct(values, 99), 1),
            "max_ms": round(max(values) * 1000, 1) if values else None,
            "mean_ms": round(statistics.fmean(values) * 1000, 1) if values else None,
        }
    n_requests = sum(len(sink[k]) for sink in (warm, out) for k in ("next", "submit"))
    duplicates = sum(
        checks[k]
        for k in (
            "tasks_over_overlap",
            "task_leased_twice_to_one_annotator",
            "annotators_with_two_live_leases",
            "tasks_leased_to_two_at_once",
        )
    )
    result = {
        "benchmark": "bench_queue",
        "products_queued": args.products,
        "gold_items": GOLD_ITEMS,
        "annotators": args.annotators,
        "duration_s": round(elapsed, 1),
        "think_ms": args.think_ms,
        "server": f"gunicorn -w {args.workers} --threads {args.threads} webapp.wsgi (DEBUG=0, 127.0.0.1)",
        "client": args.client,
        "endpoints": rows,
        "warmup_s": args.warmup,
        "warmup_requests": {"next": len(warm["next"]), "submit": len(warm["submit"])},
        "items_per_s": round(out["submitted"] / elapsed, 1),
        "verdicts": out["verdicts"],
        "empty_queue_answers": out["empty"],
        "errors": len(out["errors"]) + len(warm["errors"]),
        "error_samples": sorted(set(out["errors"] + warm["errors"]))[:10],
        "database_checks": checks,
        "duplicates": duplicates,
        "annotations_match_submits": checks["annotations"] == out["submitted"] + warm["submitted"],
        "target_met": all(r["p99_ms"] < 100 for r in rows.values())
        and not (out["errors"] or warm["errors"])
        and duplicates == 0,
        "setup_timings_s": {k: round(v, 1) for k, v in timings.items()},
        # CPU per HTTP request (warm-up included, as the CPU figures are): what caps throughput here.
        "cpu_ms_per_request": {
            "server": round(server_cpu / max(1, n_requests) * 1000, 2),
            "client": round(client_cpu / max(1, n_requests) * 1000, 2),
            # PostgreSQL's backends for the benchmark database (None: not on this machine)
            "postgres": None if pg_cpu is None else round(pg_cpu / max(1, n_requests) * 1000, 2),
        },
        "machine": {
            "cpus": os.cpu_count(),
            "load_avg_before": [round(x, 2) for x in load_before],
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
    }
    print()
    print(f"{'endpoint':<10}{'requests':>10}{'req/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    for name, r in rows.items():
        print(
            f"{name:<10}{r['requests']:>10}{r['per_s']:>9}{r['p50_ms']:>9}{r['p95_ms']:>9}{r['p99_ms']:>9}"
            f"{r['max_ms']:>9}"
        )
    print(
        f"\nitems/s {result['items_per_s']}  errors {result['errors']}  duplicates {duplicates}  "
        f"annotations {checks['annotations']} (= submits: {result['annotations_match_submits']})  "
        f"load avg before {result['machine']['load_avg_before']}  target met: {result['target_met']}\n"
        f"CPU per request: server {result['cpu_ms_per_request']['server']} ms, "
        f"client {result['cpu_ms_per_request']['client']} ms, "
        f"PostgreSQL {result['cpu_ms_per_request']['postgres']} ms"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"JSON: {args.out}")


if __name__ == "__main__":
    main()

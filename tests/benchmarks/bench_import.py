"""Catalogue import benchmark: 1,000,000 synthetic products into PostgreSQL, rows/s and peak RSS.

Run:
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench_import \
        .venv/bin/python tests/benchmarks/bench_import.py [--rows 1000000] [--out var/bench/bench_import.json]

The database named by DATABASE_URL is migrated and its products are DELETED: give it one of its own.
Each import runs in a child process that does nothing else, so its peak RSS (``ru_maxrss``) is the
import's alone: the synthetic file is generated first, by this process. Runs:

1. import of N new products (``manage.py import_products``' service, default settings);
2. the same file again: every row exists and is unchanged (the idempotent re-import);
3. baseline: ``Product.objects.update_or_create`` per row on a sample of new products (the naive
   import), extrapolated to rows/s;
4. the portable ORM path (``bulk_create(update_conflicts=True)``) on a sample of new products.

Target (issue 2): >= 20,000 rows/s and peak RSS < 500 MB for run 1.

Output: a table (rows, seconds, rows/s, peak RSS of the import process and of its largest worker, CPU
seconds, rows per CPU-second), a second table of CPU microseconds per row by process (import process,
curation workers, PostgreSQL backend; from getrusage and /proc, so much less load-dependent than the
wall-clock rows/s), and the same figures as JSON in ``--out`` with the command, commit and load average.
On a shared machine compare the CPU per row; rows/s needs a quiet one.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
TARGET_ROWS_PER_S = 20_000
TARGET_RSS_MB = 500


def _setup_django() -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings_test")  # DEBUG off: no query log
    import django

    django.setup()


def _backend_cpu_s() -> float | None:
    """CPU seconds of this connection's PostgreSQL backend (local server only, via /proc)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_s() -> tuple[float, float]:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def _peak_rss_mb() -> tuple[float, float]:
    """Peak RSS of this process and of its largest (finished) child, in MB (Linux reports KiB)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return own, children


# --- child processes: one measured job each, result as JSON on the last stdout line ------------------


def child_import(path: Path, method: str, workers: int | None, limit: int | None) -> dict[str, Any]:
    _setup_django()
    from annotation.catalogue.services import default_workers, products_import

    if limit:
        sample = path.with_suffix(".sample.jsonl")
        with path.open("rb") as source, sample.open("wb") as out:
            for number, line in enumerate(source):
                if number >= limit:
                    break
                out.write(line)
        path = sample
    if workers is None:
        workers = default_workers(path)  # what `manage.py import_products` uses
    backend_before, (main_before, workers_before) = _backend_cpu_s(), _cpu_s()
    started = time.perf_counter()
    result = products_import(path=path, method=method, workers=workers)  # type: ignore[arg-type]
    seconds = time.perf_counter() - started
    backend_after, (main_after, workers_after) = _backend_cpu_s(), _cpu_s()
    own, children = _peak_rss_mb()
    return {
        "seconds": seconds,
        "workers": workers,
        "cpu_s": {
            "import_process": main_after - main_before,
            "workers": workers_after - workers_before,
            "postgres_backend": None
            if backend_before is None or backend_after is None
            else backend_after - backend_before,
        },
        "created": result.created,
        "updated": result.updated,
        "unchanged": result.unchanged,
        "bad": result.bad,
        "rows": result.imported + result.bad,
        "peak_rss_mb": own,
        "peak_rss_worker_mb": children,
    }


def child_update_or_create(path: Path, limit: int) -> dict[str, Any]:
    """The naive import: curate each row the same way, then one ``update_or_create`` per row."""
    _setup_django()
    from django.conf import settings

    from annotation.catalogue.reader import ProductRow, read_products
    from annotation.models import Product

    with path.open("rb") as stream:
        rows = [
            row
            for _, row in zip(
                range(limit),
                read_products(
                    stream,
                    "jsonl",
                    test_fraction=settings.TEST_SPLIT_FRACTION,
                    max_text_chars=settings.CATALOGUE_MAX_TEXT_CHARS,
                ),
                strict=False,
            )
            if isinstance(row, ProductRow)
        ]
    backend_before, (main_before, _) = _backend_cpu_s(), _cpu_s()
    started = time.perf_counter()
    for row in rows:
        Product.objects.update_or_create(
            external_id=row.external_id,
            defaults={
                "title": row.title,
                "text": row.text,
                "category": row.category,
                "price": row.price,
                "price_flag": row.price_flag,
                "source": row.source,
                "extra": row.extra,
            },
            create_defaults={
                "title": row.title,
                "text": row.text,
                "category": row.category,
                "price": row.price,
                "price_flag": row.price_flag,
                "split": row.split,
                "source": row.source,
                "extra": row.extra,
            },
        )
    seconds = time.perf_counter() - started
    backend_after, (main_after, _) = _backend_cpu_s(), _cpu_s()
    own, children = _peak_rss_mb()
    return {
        "seconds": seconds,
        "rows": len(rows),
        "cpu_s": {
            "import_process": main_after - main_before,
            "workers": 0.0,
            "postgres_backend": None
            if backend_before is None or backend_after is None
            else backend_after - backend_before,
        },
        "peak_rss_mb": own,
        "peak_rss_worker_mb": children,
    }


def _commit() -> str | None:
    """The checked-out commit (with "+dirty" for uncommitted changes), so a figure can be traced to code."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, cwd=ROOT
        )
    except OSError:
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def _run_child(*args: str) -> dict[str, Any]:
    completed = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, cwd=ROOT)
    if completed.returncode != 0:
        sys.stderr.write(completed.stderr)
        raise SystemExit(f"benchmark child {args} failed with exit status {completed.returncode}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


# --- the benchmark ------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--baseline-rows", type=int, default=20_000, help="sample for update_or_create")
    parser.add_argument("--orm-rows", type=int, default=50_000, help="sample for the bulk_create path")
    parser.add_argument("--workers", type=int, default=None, help="curation processes (default: auto)")
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "bench" / "bench_import.json")
    parser.add_argument("--child-import", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-uoc", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--method", default="auto", help=argparse.SUPPRESS)
    parser.add_argument("--limit", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child_import:
        print(json.dumps(child_import(args.child_import, args.method, args.workers, args.limit)))
        return 0
    if args.child_uoc:
        print(json.dumps(child_update_or_create(args.child_uoc, args.limit)))
        return 0

    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        print(
            "bench_import needs PostgreSQL: set DATABASE_URL=postgres://... (SQLite is refused)",
            file=sys.stderr,
        )
        return 2
    _setup_django()
    from django.core.management import call_command
    from django.db import connection

    from annotation.models import Product
    from training.engine.synthetic import write_jsonl

    call_command("migrate", verbosity=0)

    def wipe() -> None:
        with connection.cursor() as cursor:
            cursor.execute(f"TRUNCATE {Product._meta.db_table} CASCADE")
        connection.close()  # the children use their own connections

    workers = ["--workers", str(args.workers)] if args.workers else []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench_import_") as tmp:
        path = Path(tmp) / "catalogue.jsonl"
        started = time.perf_counter()
        write_jsonl(path, args.rows, seed=args.seed)
        generate_s = time.perf_counter() - started
        size_mb = path.stat().st_size / 1e6
        # New ids (another seed) for the samples, so that they measure inserts like run 1.
        sample_path = Path(tmp) / "sample.jsonl"
        write_jsonl(sample_path, max(args.baseline_rows, args.orm_rows), seed=args.seed + 1)

        wipe()
        first = _run_child("--child-import", str(path), *workers)
        again = _run_child("--child-import", str(path), *workers)
        wipe()
        per_row = _run_child("--child-uoc", str(sample_path), "--limit", str(args.baseline_rows))
        wipe()
        orm = _run_child(
            "--child-import", str(sample_path), "--method", "orm", "--limit", str(args.orm_rows), *workers
        )
        wipe()
    load_after = os.getloadavg()

    runs = {
        "import_new": first,
        "reimport_unchanged": again,
        "baseline_update_or_create": per_row,
        "orm_bulk_create": orm,
    }
    cpus = os.cpu_count() or 1
    for run in runs.values():
        run["rows_per_s"] = run["rows"] / run["seconds"]
        # Load-independent view: CPU time the run needed (import process + workers + its PostgreSQL
        # backend); rows per CPU-second times the cores is what the machine could do if idle.
        cpu_total = sum(value or 0.0 for value in run["cpu_s"].values())
        run["cpu_s_total"] = cpu_total
        run["rows_per_cpu_s"] = run["rows"] / cpu_total if cpu_total else None
        # The same CPU per row, by process: the figure to compare between runs and machines.
        run["cpu_us_per_row"] = {
            name: None if value is None else round(value / run["rows"] * 1e6, 1)
            for name, value in {**run["cpu_s"], "total": cpu_total}.items()
        }
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        server_version = cursor.fetchone()[0]
    report = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "commit": _commit(),
        "rows": args.rows,
        "file_mb": round(size_mb, 1),
        "generate_seconds": round(generate_s, 1),
        "runs": runs,
        "speedup_vs_update_or_create": first["rows_per_s"] / per_row["rows_per_s"],
        "cpu_bound_capacity_rows_per_s": (first["rows_per_cpu_s"] or 0) * cpus,
        "target": {"rows_per_s": TARGET_ROWS_PER_S, "peak_rss_mb": TARGET_RSS_MB},
        "meets_target": first["rows_per_s"] >= TARGET_ROWS_PER_S and first["peak_rss_mb"] < TARGET_RSS_MB,
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in load_after],
            "python": platform.python_version(),
            "postgresql": server_version,
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")

    print(f"generated {args.rows:,} rows ({size_mb:.0f} MB JSONL) in {generate_s:.1f} s (not counted)")
    header = f"{'run':<40}{'rows':>11}{'seconds':>10}{'rows/s':>10}{'peak RSS MB':>13}{'worker MB':>11}"
    print(f"{header}{'CPU s':>9}{'rows/CPU-s':>12}")
    labels = {
        "import_new": "import, all new (COPY + upsert)",
        "reimport_unchanged": "re-import, all unchanged",
        "baseline_update_or_create": "baseline: update_or_create per row",
        "orm_bulk_create": "ORM path: bulk_create(update_conflicts)",
    }
    for key, run in runs.items():
        print(
            f"{labels[key]:<40}{run['rows']:>11,}{run['seconds']:>10.1f}{run['rows_per_s']:>10,.0f}"
            f"{run['peak_rss_mb']:>13.0f}{run['peak_rss_worker_mb']:>11.0f}"
            f"{run['cpu_s_total']:>9.1f}{run['rows_per_cpu_s'] or 0:>12,.0f}"
        )
    print(f"\n{'CPU per row, microseconds':<40}{'import':>11}{'workers':>10}{'postgres':>10}{'total':>10}")
    for key, run in runs.items():
        per_row = run["cpu_us_per_row"]
        print(
            f"{labels[key]:<40}"
            + "".join(
                f"{'n/a' if per_row[name] is None else format(per_row[name], '.1f'):>{width}}"
                for name, width in (
                    ("import_process", 11),
                    ("workers", 10),
                    ("postgres_backend", 10),
                    ("total", 10),
                )
            )
        )
    print(f"\nspeed-up over update_or_create: {report['speedup_vs_update_or_create']:.1f}x")
    if first["rows_per_cpu_s"]:
        print(
            f"CPU-bound capacity of run 1 on {cpus} idle CPUs (rows/CPU-s x CPUs): "
            f"{first['rows_per_cpu_s'] * cpus:,.0f} rows/s"
        )
    print(
        f"target >= {TARGET_ROWS_PER_S:,} rows/s and < {TARGET_RSS_MB} MB: "
        f"{'met' if report['meets_target'] else 'NOT met'} "
        f"(load average {load_before[0]:.1f} before, {load_after[0]:.1f} after, {os.cpu_count()} CPUs)"
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

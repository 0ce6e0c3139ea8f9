"""Peak memory and speed of a bulk import of a 1,000,000-row file, and of its re-run.

    python -m benchmarks.imports [--rows 1000000] [--database-url URL] [--json OUT]

What it does, in one run:

1. Writes a MovieLens ``u.data`` file (user, item, rating, unix time; tab-separated) of
   ``--rows`` distinct ratings into a temporary directory (never into the repository).
2. (Re)creates its own PostgreSQL database (default ``lodestar_import_bench``; it refuses
   ``test``, ``postgres`` and ``template*``) and migrates it.
3. Runs ``manage.py import_movielens FILE`` in a child process twice: the first run stores
   every row, the re-run must store nothing new (stable event ids). Each child's peak
   resident memory comes from ``wait4``; the baseline is ``manage.py check`` in the same
   environment: the memory of Django and the apps loaded, before any row is read.

Target: every import run under 500 MB peak, whatever the file size.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import psycopg

from benchmarks.ingest import ROOT, _cpu_model, recreate_database, server_env
from benchmarks.output import publish

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/lodestar_import_bench"
TARGET_PEAK_MB = 500
REFUSED_DATABASES = {"test", "postgres"}


def write_ratings(path: Path, rows: int, seed: int = 3) -> None:
    """`rows` distinct ratings (every row has its own timestamp), written in chunks."""
    rng = np.random.default_rng(seed)
    start = 880_000_000
    chunk = 200_000
    with path.open("w") as handle:
        for begin in range(0, rows, chunk):
            n = min(chunk, rows - begin)
            users = rng.integers(1, 50_001, size=n)
            items = rng.integers(1, 10_001, size=n)
            ratings = rng.integers(1, 6, size=n)
            stamps = start + begin + np.arange(n)
            handle.writelines(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in
                              zip(users.tolist(), items.tolist(), ratings.tolist(),
                                  stamps.tolist(), strict=True))


def run_measured(env: dict[str, str], *args: str) -> dict[str, Any]:
    """Runs manage.py in a child process; its seconds, peak RSS (MB) and last stdout line."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        began = time.perf_counter()
        child = subprocess.Popen([sys.executable, "manage.py", *args], cwd=ROOT, env=env,
                                 stdout=out, stderr=err)
        # wait4 (not Popen.wait) reaps the child with its own resource usage.
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - began
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if child.returncode:
        raise SystemExit(f"manage.py {' '.join(args)} failed:\n{stdout}\n{stderr}")
    lines = stdout.strip().splitlines()
    return {"seconds": round(seconds, 1), "peak_mb": round(usage.ru_maxrss / 1024, 1),
            "summary": lines[-1] if lines else ""}


def stored_events(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        return conn.execute("SELECT count(*) FROM ingestion_event").fetchone()[0]


def run(args: argparse.Namespace) -> dict[str, Any]:
    name = urlsplit(args.database_url).path.lstrip("/")
    if name in REFUSED_DATABASES or name.startswith("template"):
        raise SystemExit(f"refusing to recreate the database {name!r}")
    with tempfile.TemporaryDirectory(prefix="lodestar-import-bench-") as tmp:
        tmp_dir = Path(tmp)
        ratings = tmp_dir / "u.data"
        print(f"Writing {args.rows:,} ratings to {ratings} ...", flush=True)
        write_ratings(ratings, args.rows)
        print(f"Recreating {name} and migrating ...", flush=True)
        recreate_database(args.database_url)
        env = server_env(args.database_url, "memory://", tmp_dir)
        subprocess.run([sys.executable, "manage.py", "migrate", "--noinput"], cwd=ROOT,
                       env=env, check=True, capture_output=True)
        baseline = run_measured(env, "check")
        print("Importing ...", flush=True)
        first = run_measured(env, "import_movielens", str(ratings), "--no-progress")
        after_first = stored_events(args.database_url)
        print(f"  {first}", flush=True)
        print("Re-running the same import ...", flush=True)
        again = run_measured(env, "import_movielens", str(ratings), "--no-progress")
        after_again = stored_events(args.database_url)
        file_mb = ratings.stat().st_size / 2**20

    for result in (first, again):
        result["rows_per_second"] = round(args.rows / max(result["seconds"], 1e-9))
    met = (max(first["peak_mb"], again["peak_mb"]) < TARGET_PEAK_MB
           and after_first == args.rows and after_again == args.rows)
    return {
        "rows": args.rows,
        "file_mb": round(file_mb, 1),
        "database": name,
        "runs": {"baseline_manage_check": baseline, "import": first, "re_run": again},
        "stored_after_import": after_first,
        "stored_after_re_run": after_again,
        "targets": {"peak_mb": TARGET_PEAK_MB, "met": met},
        "machine": {"platform": platform.platform(), "cpu": _cpu_model(),
                    "cpus": os.cpu_count(), "python": platform.python_version()},
    }


def format_table(r: dict[str, Any]) -> str:
    lines = [f"{r['rows']:,} MovieLens rows ({r['file_mb']} MB file) into PostgreSQL "
             f"{r['database']}", "",
             f"{'run':24} {'seconds':>9} {'rows/s':>9} {'peak MB':>9}  summary"]
    for name, run_result in r["runs"].items():
        rate = run_result.get("rows_per_second")
        lines.append(f"{name:24} {run_result['seconds']:>9} "
                     f"{(f'{rate:,}' if rate else '-'):>9} {run_result['peak_mb']:>9}  "
                     f"{run_result['summary'][:60]}")
    lines += ["", f"events stored: {r['stored_after_import']:,} after the import, "
                  f"{r['stored_after_re_run']:,} after the re-run",
              f"target (peak < {TARGET_PEAK_MB} MB, exactly one event per row): "
              f"{'met' if r['targets']['met'] else 'NOT met'}"]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--database-url", default=os.environ.get("BENCH_IMPORT_DATABASE_URL",
                                                                 DEFAULT_DATABASE_URL))
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    results = run(args)
    publish(format_table(results), results, args.json)
    return 0 if results["targets"]["met"] else 1


if __name__ == "__main__":
    sys.exit(main())

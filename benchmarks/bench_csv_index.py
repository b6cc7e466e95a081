"""Memory and time to index a CC3M-sized CSV (``CsvPairs``), packed arrays vs. the old Python lists.

Usage:
    PYTHONPATH=src python benchmarks/bench_csv_index.py [--rows 3000000] [--csv /tmp/cc3m_like.csv]
        [--impl packed lists] [--stat-files 200000]

It writes a CC3M-like CSV once (``image,caption``; paths like ``images/0001234567.jpg``, captions of 60-120
characters; the images need not exist, so the index is built with ``check_files=False``), then builds the
index in a fresh process per implementation and reports the peak resident memory the build added
(``ru_maxrss`` after building minus ``ru_maxrss`` after a bare import), the resident memory still held
afterwards, and the build time. ``lists`` is the storage ``CsvPairs`` used before: a ``csv.DictReader``
and three Python lists.

``--stat-files N`` also times ``check_files`` (one stat per row) on N real, empty files in a temporary
folder: a warm local page cache, so it is the floor; network storage is slower per stat.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS = (
    "a the of in on with and at for from by man woman people dog cat car city street house tree sky sea "
    "beach mountain river road building water person young old little big red blue green white black "
    "yellow view front background sitting standing walking holding looking playing wearing during near "
    "over under inside outside against through photo image illustration vector portrait group family "
    "team player game match stadium crowd fans celebrity actor attends premiere event festival concert "
    "stage night day sunset winter summer autumn spring snow rain light flowers garden park field farm "
    "horse bird fish food dish table restaurant kitchen room bed window door wall floor chair book"
).split()


def write_csv(path: Path, rows: int, seed: int = 0) -> None:
    """``rows`` rows of ``image,caption``; 100k distinct captions reused (duplicates cost the same memory)."""
    rng = random.Random(seed)
    captions = []
    for _ in range(100_000):
        target = rng.randint(60, 120)
        words: list[str] = []
        while sum(map(len, words)) + len(words) < target:
            words.append(rng.choice(WORDS))
        captions.append(" ".join(words)[:target].strip())
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "caption"])
        for i in range(rows):
            w.writerow([f"images/{i:010d}.jpg", captions[rng.randrange(len(captions))]])


def _rss_mb() -> float:
    # Linux: ru_maxrss in KiB; the second field of /proc/self/statm is resident pages.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _current_rss_mb() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 2**20


def build_lists(path: Path):
    """The list-based index ``CsvPairs`` kept before it was packed (same checks, no file stats)."""
    from clipbackdoor.data.datasets import _LETTER

    files, captions, lines = [], [], []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        for row in reader:
            file, caption = row["image"].strip(), row["caption"].strip()
            if file and _LETTER.search(caption):
                files.append(file)
                captions.append(caption)
                lines.append(reader.line_num)
    return files, captions, lines


def child(impl: str, path: Path, check_files: bool, threads: int) -> None:
    """Runs in a fresh process: import, record the baseline, build, report."""
    from clipbackdoor.data.datasets import CsvPairs

    base_peak, base_now = _rss_mb(), _current_rss_mb()
    t0 = time.perf_counter()
    if impl == "packed":
        index = CsvPairs(str(path), check_files=check_files, check_threads=threads)
        n = len(index)
        nbytes = index.files.nbytes + index.captions.nbytes + index.lines.nbytes
    else:
        index = build_lists(path)
        n, nbytes = len(index[0]), None
    seconds = time.perf_counter() - t0
    print(json.dumps({
        "impl": impl, "rows": n, "seconds": round(seconds, 2),
        "peak_added_mb": round(_rss_mb() - base_peak, 1),
        "held_mb": round(_current_rss_mb() - base_now, 1),
        "array_mb": None if nbytes is None else round(nbytes / 2**20, 1),
        "import_rss_mb": round(base_now, 1),
    }))


def run_child(impl: str, path: Path, check_files: bool = False, threads: int = 1) -> dict:
    cmd = [sys.executable, __file__, "--child", impl, "--csv", str(path), "--threads", str(threads)]
    if check_files:
        cmd.append("--check-files")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def stat_benchmark(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "images").mkdir()
        for i in range(n):
            (root / "images" / f"{i:010d}.jpg").touch()
        path = root / "index.csv"
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["image", "caption"])
            w.writerows([f"images/{i:010d}.jpg", "a photo of a dog on a beach"] for i in range(n))
        for check, threads in ((False, 1), (True, 1), (True, 16)):
            r = run_child("packed", path, check, threads)
            label = f"check_files={check}" + (f", check_threads={threads}" if check else "")
            print(f"{n:,} real files, {label:<36} {r['seconds']:6.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=3_000_000)
    parser.add_argument("--csv", type=Path, default=Path(tempfile.gettempdir()) / "cc3m_like.csv",
                        help="reused if it exists with the right number of rows")
    parser.add_argument("--impl", nargs="*", choices=("packed", "lists"), default=["packed", "lists"])
    parser.add_argument("--stat-files", type=int, default=0, help="also time check_files on N real files")
    parser.add_argument("--child", choices=("packed", "lists"), help=argparse.SUPPRESS)
    parser.add_argument("--check-files", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.csv, args.check_files, args.threads)
        return

    marker = args.csv.with_suffix(".rows")
    if not (args.csv.is_file() and marker.is_file() and marker.read_text() == str(args.rows)):
        t0 = time.perf_counter()
        write_csv(args.csv, args.rows)
        marker.write_text(str(args.rows))
        print(f"wrote {args.csv} ({args.rows:,} rows) in {time.perf_counter() - t0:.1f} s")
    print(f"{args.csv}: {args.csv.stat().st_size / 2**20:.0f} MiB")
    for impl in args.impl:
        r = run_child(impl, args.csv)
        arrays = f", arrays {r['array_mb']} MiB" if r["array_mb"] is not None else ""
        print(f"{impl:<7} {r['rows']:,} rows in {r['seconds']:.1f} s; peak RSS +{r['peak_added_mb']:.0f} MiB, "
              f"held +{r['held_mb']:.0f} MiB{arrays} (import baseline {r['import_rss_mb']:.0f} MiB)")
    if args.stat_files:
        stat_benchmark(args.stat_files)


if __name__ == "__main__":
    main()

"""``clipbackdoor report``: tables, plots and an HTML page from a folder of run directories."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="write the accuracy-vs-ASR report of a folder of runs",
                       description="Read every run directory under RUNS_DIR and write results.csv, summary.csv, "
                                   "summary.md, pareto.csv, plots/*.png and report.html.")
    p.add_argument("runs_dir", help="folder holding run directories (e.g. a sweep's --out)")
    p.add_argument("--out", "-o", help="where to write the report (default: RUNS_DIR)")
    p.set_defaults(func=run)


def run(args) -> int:
    from clipbackdoor.reporting.report import write_report

    report = write_report(args.runs_dir, args.out)
    print(report.summary())  # the answer first, then the table and the details
    print()
    print(f"report: {report.html_path}")
    if report.problems:
        print(f"left out of the report ({len(report.problems)}; see the warnings above):")
        for problem in report.problems:
            print(f"  {problem}")
    return 0

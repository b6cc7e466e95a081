"""The report's tables: per group (markdown and CSV), pre-training runs, and the short console table."""

from __future__ import annotations

import csv
import io
from typing import Any

from clipbackdoor.reporting.analysis import CONFIG_THRESHOLD, THRESHOLDS, GroupSummary, pretraining_runs
from clipbackdoor.reporting.collect import RunInfo
from clipbackdoor.reporting.labels import VERDICT_THRESHOLD, method_text, pct, pick_text, pm, signed, text_table

SUMMARY_HEADERS = ["pre-training", "cleaning", "seeds", "configs", "poisoned acc", "poisoned ASR",
                   "clean→target", *[f"best acc @ASR≤{int(t * 100)}%" for t in THRESHOLDS],
                   f"Δacc @≤{VERDICT_THRESHOLD:.0%}", "control Δacc", "defender pick", "min ASR"]


def group_row(g: GroupSummary) -> list[str]:
    seeds = g.seeds
    detail = len(seeds) == 1
    starts = [s.start or {} for s in seeds]
    row = [g.objective, method_text(g.method, g.poisons), str(len(seeds)),
           str(sum(s.runs for s in seeds) // len(seeds)),
           pm([st.get("zeroshot_top1") for st in starts]), pm([st.get("asr_top1") for st in starts]),
           pm([st.get("clean_target_rate") for st in starts])]
    for t in THRESHOLDS:
        picks = [s.best[t] for s in seeds]
        if detail:
            row.append(pick_text(picks[0], True))
        else:
            reached = [p for p in picks if p is not None]
            row.append(f"{pm([p.point.acc for p in reached])} ({len(reached)}/{len(seeds)} seeds)"
                       if reached else "not reached")
    picks = [s.best[VERDICT_THRESHOLD] for s in seeds]
    row.append(pm([p.delta for p in picks if p], signed) if any(picks) else "–")
    row.append(pm([p.control_delta for p in picks if p and p.control_delta is not None], signed))
    defenders = [s.defender for s in seeds if s.defender]
    if detail:
        row.append(pick_text(defenders[0], True) if defenders else "no val_loss")
    else:
        row.append(f"{pm([d.point.acc for d in defenders])} / ASR {pm([d.point.asr for d in defenders])}"
                   if defenders else "no val_loss")
    row.append(pm([s.min_asr for s in seeds]))
    return row


def summary_table(groups: list[GroupSummary]) -> tuple[list[str], list[list[str]]]:
    return SUMMARY_HEADERS, [group_row(g) for g in groups]


def summary_csv_rows(groups: list[GroupSummary]) -> list[dict[str, Any]]:
    """Machine-readable: one row per seed, fractions, with the run and epoch of every pick."""
    rows = []
    for g in groups:
        for s in g.seeds:
            st = s.start or {}
            row: dict[str, Any] = {"model": g.model, "pretrain_objective": g.objective, "method": g.method,
                                   "cleaning_poisons": g.poisons, "seed": s.seed,
                                   "configs": s.runs, "evaluations": len(s.points),
                                   "poisoned_acc": st.get("zeroshot_top1"), "poisoned_asr": st.get("asr_top1"),
                                   "poisoned_clean_target_rate": st.get("clean_target_rate"),
                                   "control_start_acc": (s.control_start or {}).get("zeroshot_top1"),
                                   "min_asr": s.min_asr}
            for t, pick in [*s.best.items(), ("defender", s.defender)]:
                tag = f"asr{int(t * 100)}" if t != "defender" else "defender"
                p = pick.point if pick else None
                row.update({f"{tag}_acc": p.acc if p else None, f"{tag}_asr": p.asr if p else None,
                            f"{tag}_delta": pick.delta if pick else None,
                            f"{tag}_control_delta": pick.control_delta if pick else None,
                            f"{tag}_run": p.run.name if p else None, f"{tag}_epoch": p.epoch if p else None})
            rows.append(row)
    return rows


def pretraining_table(runs: list[RunInfo]) -> tuple[list[str], list[list[str]]]:
    headers = ["run", "objective", "poisoned", "seed", "epochs", "acc", "ASR", "clean→target", "peak ASR (epoch)"]
    rows = []
    for r in pretraining_runs(runs):
        last = r.evals[-1] if r.evals else {}
        peak = max(r.evals, key=lambda e: e.get("asr_top1", -1), default={})
        rows.append([r.name, r.objective, "yes" if r.poisoned else "no (control)", str(r.seed),
                     str(last.get("epoch", "–")), pct(last.get("zeroshot_top1")), pct(last.get("asr_top1")),
                     pct(last.get("clean_target_rate")),
                     f"{pct(peak.get('asr_top1'))} ({peak.get('epoch', '–')})"])
    return headers, rows


def csv_text(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return buffer.getvalue()



def headline_table(groups: list[GroupSummary]) -> str:
    """The short table a terminal shows: one line per group."""
    headers = ["pre-training", "cleaning", "poisoned acc/ASR", "best acc @ASR≤10%", "Δacc", "control Δacc"]
    rows = []
    for g in groups:
        starts = [s.start or {} for s in g.seeds]
        picks = [s.best[VERDICT_THRESHOLD] for s in g.seeds]
        reached = [p for p in picks if p]
        rows.append([g.objective, method_text(g.method, g.poisons),
                     f"{pm([s.get('zeroshot_top1') for s in starts])} / {pm([s.get('asr_top1') for s in starts])}",
                     pm([p.point.acc for p in reached]) if reached else "not reached",
                     pm([p.delta for p in reached], signed) if reached else "–",
                     pm([p.control_delta for p in reached if p.control_delta is not None], signed)])
    return text_table(headers, rows)




CONFIG_HEADERS = ["pre-training", "cleaning", "configuration", "seeds", "ASR after the last epoch", "lowest ASR",
                  f"best acc @ASR≤{CONFIG_THRESHOLD:.0%}", "Δacc", "control Δacc"]


def config_table(groups: list[GroupSummary]) -> tuple[list[str], list[list[str]]]:
    """Each cleaning configuration on its own (mean ± sd over seeds): the summary table takes the best over
    all of them, which hides how each learning rate, budget or weight did. No rows when every group was
    cleaned one way only."""
    if all(len({c for s in g.seeds for c in s.configs}) <= 1 for g in groups):
        return CONFIG_HEADERS, []
    rows = []
    for g in groups:
        configs = {c: r.lr for s in g.seeds for c, r in s.configs.items()}
        for name in sorted(configs, key=lambda c: (configs[c], c)):  # by learning rate, then name
            results = [s.configs[name] for s in g.seeds if name in s.configs]
            reached = [r.best for r in results if r.best is not None]
            rows.append([
                g.objective, method_text(g.method, g.poisons), name, str(len(results)),
                pm([r.final_asr for r in results]), pm([r.min_asr for r in results]),
                f"{pm([p.point.acc for p in reached])} ({len(reached)}/{len(results)} seeds)" if reached
                else "not reached",
                pm([p.delta for p in reached], signed) if reached else "–",
                pm([p.control_delta for p in reached if p.control_delta is not None], signed) if reached else "–",
            ])
    return CONFIG_HEADERS, rows

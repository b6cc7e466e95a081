"""The report's verdict: the paper's question answered in plain words, with its caveats."""

from __future__ import annotations

from clipbackdoor.reporting.analysis import GroupSummary, mean_std
from clipbackdoor.reporting.headline import MARK, asr_decay, cleanclip_groups, decay_text, headline_targets
from clipbackdoor.reporting.labels import VERDICT_THRESHOLD, change_text, pct

# A gap in best accuracy smaller than this many points (or than the seed spread) is not called a difference.
MEANINGFUL_GAP = 0.02


# Where the defender's rule is shown: the verdict is printed on a terminal and shown on the page, so it names
# the table and column rather than a position ("below", "beside") that is true in only one of them.
DEFENDER_WHERE = 'the "defender pick" column of the Cleaning table (report.html, summary.md)'


def answer(groups: list[GroupSummary]) -> str:
    """The paper's question answered in one sentence with its numbers, for the top of the report: does CleanCLIP
    remove the backdoor from the model of each pre-training objective, from what ASR to what, at what
    accuracy cost, over which seeds? Empty when no CleanCLIP run of a poisoned model was found."""
    clean = cleanclip_groups(groups)
    if not clean:
        return ""
    seeds = {o: sorted(s.seed for s in g.seeds) for o, g in clean.items()}
    shared = len({tuple(v) for v in seeds.values()}) == 1
    clauses = [_answer_clause(o, g, None if shared else seeds[o]) for o, g in clean.items()]
    clauses[0] = clauses[0][0].upper() + clauses[0][1:]
    tail = f" ({_seeds_text(next(iter(seeds.values())))})" if shared else ""
    return f"Does CleanCLIP remove the backdoor? {'; '.join(clauses)}{tail}."


def _seeds_text(seeds: list[int]) -> str:
    return f"seed {seeds[0]}" if len(seeds) == 1 else f"mean of seeds {', '.join(map(str, seeds))}"


def _answer_clause(objective: str, g: GroupSummary, seeds: list[int] | None) -> str:
    """"from the MMCL model, yes: ASR 94.2% → 0.9%, ...": one objective's answer with its numbers."""
    start_asr, _ = mean_std([(s.start or {}).get("asr_top1") for s in g.seeds])
    weak = start_asr < 0.5
    reached = [p for p in (s.best[VERDICT_THRESHOLD] for s in g.seeds) if p]
    pct_t = int(VERDICT_THRESHOLD * 100)
    if not reached:
        low, _ = mean_std([s.min_asr for s in g.seeds])
        word, detail = "no", f"ASR {pct(start_asr)}% → {pct(low)}% at best, above the {pct_t}% bound"
    else:
        word = "yes" if len(reached) == len(g.seeds) else f"in {len(reached)} of {len(g.seeds)} seeds"
        # Before and after over the same seeds: those that got under the bound.
        start_asr, _ = mean_std([(s.start or {}).get("asr_top1") for s in g.seeds if s.best[VERDICT_THRESHOLD]])
        after, _ = mean_std([p.point.asr for p in reached])
        delta, _ = mean_std([p.delta for p in reached])
        detail = f"ASR {pct(start_asr)}% → {pct(after)}%, accuracy {change_text(delta, 'before cleaning')}"
        controls = [p.control_delta for p in reached if p.control_delta is not None]
        if controls:
            detail += f", against {change_text(mean_std(controls)[0])} for its un-poisoned control cleaned the same way"
    if weak:
        detail += " (it learned the backdoor only weakly)"
    if seeds is not None:
        detail += f" ({_seeds_text(seeds)})"
    return f"from the {objective} model, {word}: {detail}"


def verdict(groups: list[GroupSummary]) -> str:
    """The paper's question in plain words: the answer first (``answer``), then, per pre-training objective,
    what CleanCLIP did and at what accuracy cost compared with the control, and the caveats."""
    clean = cleanclip_groups(groups)
    poisoned_data = poisoned_cleaning_text(groups)
    if not clean:
        if poisoned_data:
            return ("No CleanCLIP cleaning runs of poisoned models on clean cleaning data were found, so there is "
                    f"no verdict.\n\n{poisoned_data}")
        return "No CleanCLIP cleaning runs of poisoned models were found, so there is no verdict."
    lines, best = [answer(groups)], {}
    pct_t = int(VERDICT_THRESHOLD * 100)
    for objective, g in clean.items():
        n = len(g.seeds)
        start_acc, _ = mean_std([(s.start or {}).get("zeroshot_top1") for s in g.seeds])
        start_asr, _ = mean_std([(s.start or {}).get("asr_top1") for s in g.seeds])
        floor, _ = mean_std([(s.start or {}).get("clean_target_rate") for s in g.seeds])
        picks = [s.best[VERDICT_THRESHOLD] for s in g.seeds]
        reached = [p for p in picks if p]
        seeds_txt = f" (mean over {n} seeds)" if n > 1 else ""
        text = (f"{objective} pre-training{seeds_txt}: the poisoned model has {pct(start_acc)}% accuracy and "
                f"{pct(start_asr)}% ASR (the clean false-positive rate for the target is {pct(floor)}%). ")
        if start_asr < 0.5:
            text += "It learned the backdoor only weakly, so cleaning it says little. "
        if not reached:
            low, _ = mean_std([s.min_asr for s in g.seeds])
            text += f"CleanCLIP never brought ASR to {pct_t}% or below (lowest {pct(low)}%)."
        else:
            d, dsd = mean_std([p.delta for p in reached])
            acc, _ = mean_std([p.point.acc for p in reached])
            best[objective] = (acc, d, dsd, len(reached), n)
            than = change_text(d, "the poisoned model's")
            text += (f"CleanCLIP reached ASR ≤ {pct_t}% in {len(reached)} of {n} seed(s); the best such "
                     f"checkpoint has {pct(acc)}% accuracy, {than}")
            ctl = [p.control_delta for p in reached if p.control_delta is not None]
            if ctl:
                c, _ = mean_std(ctl)
                text += (f", while the same fine-tuning left an un-poisoned model {change_text(c, 'before')}, "
                         "so most of that change is the cost of fine-tuning, not of removing the backdoor"
                         if abs(c) >= abs(d) / 2 else
                         f", against {change_text(c)} for the same fine-tuning of an un-poisoned model")
            text += "."
        lines.append(text)
    lines.append(comparison(clean, best))
    decay = decay_text(asr_decay(groups))
    if decay:
        lines.append(decay)
    targets = headline_targets(groups)
    if not all(t.met for t in targets):
        lines.append("The paper's headline, as three targets, is not met here (" + "; ".join(
            f"{t.key}: {MARK[t.met]}" for t in targets) + "). For where it starts with model size, see "
            "`clipbackdoor demo --preset headline` and docs/demo.md.")
    if poisoned_data:
        lines.append(poisoned_data)
    lines.append("Selection above uses the paper's oracle rule (test accuracy and the true trigger); the "
                 f"defender's rule (lowest held-out clean loss) is in {DEFENDER_WHERE}.")
    return "\n\n".join(lines)


def poisoned_cleaning_text(groups: list[GroupSummary]) -> str:
    """What poisons in the cleaning data did to CleanCLIP (system.md 4.2), per pre-training objective; empty
    when no cleaning set was poisoned."""
    by_objective: dict[str, dict[int, GroupSummary]] = {}
    for g in groups:
        if g.method == "cleanclip":
            by_objective.setdefault(g.objective, {})[g.poisons] = g
    lines = []
    pct_t = int(VERDICT_THRESHOLD * 100)
    for objective, by_k in by_objective.items():
        if not any(by_k):
            continue
        ks = sorted(by_k)
        low = [f"{pct(mean_std([s.min_asr for s in by_k[k].seeds])[0])}%" for k in ks]
        best = []
        for k in ks:
            reached = [p for p in (s.best[VERDICT_THRESHOLD] for s in by_k[k].seeds) if p]
            best.append(f"{pct(mean_std([p.point.acc for p in reached])[0])}%" if reached else "not reached")
        lines.append(f"Poisoned cleaning data, {objective} pre-training: with {' / '.join(map(str, ks))} poisons "
                     f"in the cleaning data, CleanCLIP's lowest ASR was {' / '.join(low)} and its best accuracy "
                     f"at ASR ≤ {pct_t}% {' / '.join(best)}.")
    return " ".join(lines)


def comparison(clean: dict[str, GroupSummary], best: dict[str, tuple]) -> str:
    """MMCL against MMCL+SSL. Accuracy costs are compared only when both were cleaned in every seed; a
    difference in how often cleaning succeeded is reported as such, and a weakly learned backdoor is named
    as the confound it is."""
    if "MMCL" not in clean or "MMCL+SSL" not in clean:
        return "Only one pre-training objective was cleaned, so the two cannot be compared."
    weak = [o for o in ("MMCL", "MMCL+SSL")
            if mean_std([(s.start or {}).get("asr_top1") for s in clean[o].seeds])[0] < 0.5]
    caveat = (f" But the {' and '.join(weak)} model{'s' if len(weak) > 1 else ''} learned the backdoor only "
              "weakly, so this comparison is confounded and does not test the paper's claim."
              if weak else "")
    n = {o: len(clean[o].seeds) for o in ("MMCL", "MMCL+SSL")}
    hit = {o: best[o][3] if o in best else 0 for o in ("MMCL", "MMCL+SSL")}
    pct_t = int(VERDICT_THRESHOLD * 100)
    if hit["MMCL"] != n["MMCL"] or hit["MMCL+SSL"] != n["MMCL+SSL"]:
        text = (f"CleanCLIP reached ASR ≤ {pct_t}% in {hit['MMCL']} of {n['MMCL']} seed(s) for MMCL "
                f"pre-training and in {hit['MMCL+SSL']} of {n['MMCL+SSL']} for MMCL+SSL pre-training, so the "
                "accuracy costs are not compared.")
        if hit["MMCL"] / n["MMCL"] > hit["MMCL+SSL"] / n["MMCL+SSL"]:
            text += " The MMCL+SSL model was the harder one to clean, the paper's direction."
        return text + caveat
    _, d1, s1, _, _ = best["MMCL"]
    _, d2, s2, _, _ = best["MMCL+SSL"]
    gap, noise = d1 - d2, max(MEANINGFUL_GAP, s1 + s2)
    if gap > noise:
        text = (f"Cleaning cost the MMCL+SSL model {100 * gap:.1f} points more accuracy than the MMCL model at "
                "the same ASR bound: the paper's effect appears here.")
    elif gap < -noise:
        text = (f"Cleaning cost the MMCL+SSL model {100 * -gap:.1f} points less than the MMCL model: the "
                "opposite of the paper's effect.")
    else:
        # gap > 0: the MMCL+SSL model lost more accuracy than the MMCL model.
        how = (f"{100 * abs(gap):.1f} points {'more' if gap > 0 else 'less'} accuracy than"
               if round(100 * gap, 1) else "as much accuracy as")
        text = (f"Cleaning cost the MMCL+SSL model {how} the MMCL model, within the noise ({100 * noise:.1f} "
                "points): the paper's effect does not clearly appear at this scale.")
    return text + caveat



"""Markdown report and PNG plots (matplotlib, Agg backend) of a results.json dict."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# Direction of each metric, for the report's headers (anything else: no arrow).
HIGHER_IS_BETTER = {"clip_i", "clip_t", "dino", "clip_dir_text", "clip_dir_image", "acc", "exact", "coherence",
                    "coherence_separate", "sim", "sim_separate", "output_rate"}
LOWER_IS_BETTER = {"l1", "l2", "lsd", "kl_softmax", "kl_sigmoid", "fd", "fad"}


def _label(metric: str) -> str:
    return metric + (" ↑" if metric in HIGHER_IS_BETTER else " ↓" if metric in LOWER_IS_BETTER else "")


def _cell(s: dict) -> str:
    return f"{s['mean']:.4f} [{s['ci_low']:.4f}, {s['ci_high']:.4f}] (n={s['n']})"


def _table(groups: dict[str, dict], header: str) -> list[str]:
    metrics = sorted({m for g in groups.values() for m in g})
    if not metrics:
        return []
    lines = [f"| {header} | " + " | ".join(_label(m) for m in metrics) + " |",
             "|---|" + "---|" * len(metrics)]
    for name, g in groups.items():
        lines.append(f"| {name} | " + " | ".join(_cell(g[m]) if m in g else "–" for m in metrics) + " |")
    return lines


def plot_shots(results: dict, path: Path) -> bool:
    """One panel per metric: mean and 95% CI against the shot count. False when there is one shot count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by = results["metrics"]["by_shots"]
    shots = sorted(by, key=int)
    if len(shots) < 2:
        return False
    metrics = sorted(m for m in {m for g in by.values() for m in g} if sum(m in g for g in by.values()) >= 2)
    if not metrics:
        return False
    cols = min(3, len(metrics))
    rows = (len(metrics) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    for ax, m in zip(axes.flat, metrics):
        ks = [int(k) for k in shots if m in by[k]]
        mean = [by[str(k)][m]["mean"] for k in ks]
        err = [[mu - by[str(k)][m]["ci_low"] for k, mu in zip(ks, mean)],
               [by[str(k)][m]["ci_high"] - mu for k, mu in zip(ks, mean)]]
        ax.errorbar(ks, mean, yerr=err, marker="o", capsize=3)
        ax.set_title(_label(m))
        ax.set_xlabel("shots")
        ax.set_xticks(ks)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    fig.suptitle(f"{results['suite']}: metric vs shots (95% bootstrap CI)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def plot_tasks(results: dict, path: Path) -> bool:
    """One panel per metric: a bar per task with its 95% CI. False when there is one task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by = results["metrics"]["by_task"]
    tasks = sorted(by)
    if len(tasks) < 2:
        return False
    # per-attribute accuracies and the output rate stay in the tables
    metrics = sorted(m for m in {m for g in by.values() for m in g} if not m.startswith("acc_") and m != "output_rate")
    fig, axes = plt.subplots(len(metrics), 1, figsize=(max(6, 0.5 * len(tasks) + 2), 2.6 * len(metrics)), squeeze=False)
    for ax, m in zip(axes[:, 0], metrics):
        ts = [t for t in tasks if m in by[t]]
        mean = [by[t][m]["mean"] for t in ts]
        err = [[mu - by[t][m]["ci_low"] for t, mu in zip(ts, mean)], [by[t][m]["ci_high"] - mu for t, mu in zip(ts, mean)]]
        ax.bar(range(len(ts)), mean, yerr=err, capsize=3)
        ax.set_xticks(range(len(ts)))
        ax.set_xticklabels(ts, rotation=45, ha="right", fontsize=8)
        ax.set_title(_label(m))
    fig.suptitle(f"{results['suite']}: per task (95% bootstrap CI)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _target_rows(rows: list[dict], what: str, verdict: str) -> list[str]:
    lines = [f"| {what} | task | shots | metric | value | threshold | n | {verdict} |", "|---" * 8 + "|"]
    for t in rows:
        value = "–" if t["value"] is None else f"{t['value']:.3f}"
        lines.append(f"| {t['label']} | {t['task']} | {t['shots'] if t['shots'] is not None else 'all'} | "
                     f"{t['metric']} | {value} | {t['threshold']} | {t['n']} | {'yes' if t['pass'] else 'no'} |")
    return lines


BREAKDOWN_METRICS = ("exact", "edit_named", "edit_acc", "preserve_acc")  # the split tables' columns, when present
BREAKDOWN_TITLES = {"changed": "By the attribute changed (editing tasks; a three-round dialogue: its last round's edit)"}


def _breakdown_rows(rows: list[dict], name: str) -> list[str]:
    metrics = [k for k in BREAKDOWN_METRICS if any(k in r["metrics"] for r in rows)]
    lines = [f"| task | shots | {name} | " + " | ".join(_label(k) for k in metrics) + " |",
             "|---|---|---|" + "---|" * len(metrics)]
    for r in rows:
        lines.append(f"| {r['task']} | {r['shots']} | {r['value']} | "
                     + " | ".join(_cell(r["metrics"][k]) if k in r["metrics"] else "–" for k in metrics) + " |")
    return lines


def _suite_class(name: str) -> type:
    """The registered suite class (its report titles); the base class for a suite no longer registered."""
    from .registry import get_suite
    from .suites import Suite

    try:
        return get_suite(name).cls
    except ValueError:
        return Suite


def write_report(results: dict[str, Any], out_dir: Path) -> Path:
    """Writes ``report.md`` (+ ``plot_shots.png`` / ``plot_tasks.png`` when there is more than one group)."""
    out = Path(out_dir)
    m = results["metrics"]
    cfg = results["config"]
    lines = [f"# codi2 eval: {results['suite']}", ""]
    if cfg.get("mode") == "score":
        lines += [f"Scored `{cfg['pred']}` against `{cfg['ref']}`.", ""]
    else:
        lines += [f"Model `{cfg['model']}`, data `{cfg['data']}`, shots {cfg['shots']}, n {cfg['n']}, seed {cfg['seed']}"
                  + (", outputs forced" if cfg.get("force_output") else "") + ".", ""]
    fp = results.get("fingerprints", {})
    lines += ["Fingerprints: " + ", ".join(f"{k} `{v[:12]}`" for k, v in fp.items() if isinstance(v, str)), "",
              "Means with 95% percentile-bootstrap confidence intervals.", "", "## Overall", ""]
    lines += _table({"all": m["overall"]}, "samples")
    if len(m["by_shots"]) > 1 or cfg.get("mode") != "score":
        lines += ["", "## By shots", ""] + _table(m["by_shots"], "shots")
    if m.get("paired_shots"):
        lines += ["", "## Paired shots", "",
                  "The same items at more shots minus at the fewest: mean difference [95% CI] (items), and how many "
                  "items rose / fell.", ""]
        names = sorted({n for g in m["paired_shots"].values() for n in g})
        lines += ["| shots | " + " | ".join(_label(n) for n in names) + " |", "|---|" + "---|" * len(names)]
        for pair, g in m["paired_shots"].items():
            lines.append(f"| {pair} | " + " | ".join(
                f"{_cell(g[n])}, +{g[n]['better']} / −{g[n]['worse']}" if n in g else "–" for n in names) + " |")
    if len(m["by_task"]) > 1:
        lines += ["", "## By task", ""] + _table(m["by_task"], "task")
    for name in sorted({r["by"] for r in m.get("by_breakdown", [])}):
        rows = [r for r in m["by_breakdown"] if r["by"] == name]
        lines += ["", f"## {BREAKDOWN_TITLES.get(name, f'By {name}')}", ""]
        lines += _breakdown_rows(rows, name)
    if m.get("targets"):
        targets = [t for t in m["targets"] if t.get("target", True)]
        beside = [t for t in m["targets"] if not t.get("target", True)]
        measured = [t for t in targets if t["value"] is not None]
        missing = len(targets) - len(measured)
        count = f"{sum(t['pass'] for t in measured)} of the {len(measured)} measured targets met"
        suite = _suite_class(results["suite"])
        lines += ["", f"## {suite.targets_title}", "", count + (f" ({missing} without records in this run)."
                                                                if missing else "."), ""]
        lines += _target_rows(targets, "target", "pass")
        if beside:
            lines += ["", suite.targets_beside_note, ""]
            lines += _target_rows(beside, "comparison", "holds")
    if m.get("set"):
        lines += ["", "## Set-level metrics (point values)", ""]
        groups = {"all": m["set"].get("overall", {})}
        groups.update({f"{k} shots": v for k, v in m["set"].get("by_shots", {}).items()})
        names = sorted({n for g in groups.values() for n in g})
        lines += ["| group | " + " | ".join(_label(n) for n in names) + " |", "|---|" + "---|" * len(names)]
        lines += [f"| {g} | " + " | ".join(f"{v[n]:.4f}" if n in v else "–" for n in names) + " |" for g, v in groups.items()]
    if plot_shots(results, out / "plot_shots.png"):
        lines += ["", "![metric vs shots](plot_shots.png)"]
    if plot_tasks(results, out / "plot_tasks.png"):
        lines += ["", "![per task](plot_tasks.png)"]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path

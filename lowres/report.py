"""Tables and plots of evaluation results: the terminal table, a Markdown table and PNG charts."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from lowres.artifacts import read_jsonl
from lowres.errors import UserError
from lowres.evaluate import EvalResult, load_results

Results = dict[str, list[EvalResult]]  # label -> one result per task


def _cell(result: EvalResult | None) -> str:
    if result is None:
        return "—"
    return (f"{100 * result.accuracy_mean:.1f} ± {100 * result.accuracy_std:.1f} "
            f"(format ok {100 * (1 - result.format_error_rate):.0f}%)")


def _tasks(results: Results) -> list[str]:
    seen: dict[str, None] = {}
    for rs in results.values():
        for r in rs:
            seen.setdefault(r.task, None)
    return list(seen)


def _lookup(results: Results, label: str, task: str) -> EvalResult | None:
    return next((r for r in results[label] if r.task == task), None)


TITLE = "accuracy (%), mean ± std over samples (share of well-formed answers)"


def results_table(results: Results, title: str = TITLE) -> Table:
    """Task × model."""
    table = Table(title=title, title_justify="left")
    table.add_column("task")
    for label in results:
        table.add_column(label, justify="right")
    for task in _tasks(results):
        table.add_row(task, *(_cell(_lookup(results, label, task)) for label in results))
    return table


def results_markdown(results: Results) -> str:
    labels = list(results)
    lines = ["| task | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
    for task in _tasks(results):
        lines.append(f"| {task} | " + " | ".join(_cell(_lookup(results, label, task)) for label in labels) + " |")
    return "\n".join(lines) + "\n"


RUN_LABELS = ("base", "warmup", "rlvr", "rlvr-no-warmup")  # a run's evaluated models, in table order

# What a run's comparisons mean: (later, earlier, what the difference measures).
COMPARISONS = (("warmup", "base", "warmup alone"),
               ("rlvr", "rlvr-no-warmup", "the same GRPO from the warmed model vs from the base"),
               ("rlvr", "warmup", "GRPO on top of the warmup"))


def difference_standard_error(a: EvalResult, b: EvalResult) -> float:
    """The standard error of the difference between two accuracies, each over its n_questions ×
    n_samples answers, under the hypothesis that both models are equally accurate (the two-proportion
    test's pooled estimate). Unlike each accuracy's own binomial error, it does not vanish when one
    model scores 0%. Answers to the same question are correlated, so it understates the real
    uncertainty somewhat."""
    n_a, n_b = max(a.n_questions * a.n_samples, 1), max(b.n_questions * b.n_samples, 1)
    pooled = (a.accuracy_mean * n_a + b.accuracy_mean * n_b) / (n_a + n_b)
    return (pooled * (1 - pooled) * (1 / n_a + 1 / n_b)) ** 0.5


def comparison_lines(results: Results) -> list[str]:
    """One Markdown line per comparison the run has, per task: the difference in points, both figures,
    the well-formed shares, and whether the difference is beyond 2 standard errors."""
    lines = []
    for later, earlier, meaning in COMPARISONS:
        if later not in results or earlier not in results:
            continue
        for task in _tasks(results):
            a, b = _lookup(results, later, task), _lookup(results, earlier, task)
            if a is None or b is None:
                continue
            diff = 100 * (a.accuracy_mean - b.accuracy_mean)
            noise = 200 * difference_standard_error(a, b)
            if a.accuracy_mean == b.accuracy_mean:
                verdict = "the same score"
            else:
                verdict = f"{'beyond' if abs(diff) > noise else 'within'} noise (2 standard errors: ±{noise:.1f})"
            lines.append(f"- **{later} vs {earlier}** ({meaning}), {task}: {diff:+.1f} points "
                         f"({_cell(a)} vs {_cell(b)}); {verdict}")
    return lines


def collect(paths: list[Path]) -> Results:
    """Results from `lowres eval` output folders and/or `lowres run` folders (runs/<name>)."""
    results: Results = {}
    for path in map(Path, paths):
        if (path / "results.json").is_file():
            results[path.name] = load_results(path)
        elif (path / "eval").is_dir():
            for label_dir in sorted((path / "eval").iterdir(), key=lambda p: RUN_LABELS.index(p.name)
                                    if p.name in RUN_LABELS else 9):
                if (label_dir / "results.json").is_file():
                    results[f"{path.name}/{label_dir.name}"] = load_results(label_dir)
        else:
            raise UserError(f"{path}: no results here (expected a `lowres eval --out` folder or a runs/<name> folder)")
    if not results:
        raise UserError("no evaluation results found in " + ", ".join(map(str, paths)))
    return results


def plot_comparison(results: Results, png: Path) -> Path:
    """Grouped bars: one group per task, one bar per model, error bars = std over samples."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks, labels = _tasks(results), list(results)
    width = 0.8 / max(len(labels), 1)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.6 * len(tasks) * max(1, len(labels)) / 2), 3.6))
    for i, label in enumerate(labels):
        found = [_lookup(results, label, t) for t in tasks]
        xs = [j + (i - (len(labels) - 1) / 2) * width for j in range(len(tasks))]
        means = [100 * r.accuracy_mean if r else 0.0 for r in found]
        stds = [100 * r.accuracy_std if r else 0.0 for r in found]
        ax.bar(xs, means, width, yerr=stds, capsize=3, label=label)
    ax.set_xticks(range(len(tasks)), tasks)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8)
    ax.set_title("lowres: accuracy by task")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return png


def plot_reward_curves(curves: dict[str, Path], png: Path) -> Path | None:
    """GRPO runs side by side: each run's mean reward per step (left) and its share of groups whose
    completions all scored the same, which carry no learning signal (right). None if nothing logged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    plotted = False
    for label, metrics in curves.items():
        records = read_jsonl(metrics) if metrics.is_file() else []
        for ax, key in ((left, "reward"), (right, "frac_reward_zero_std")):
            points = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", markersize=3, label=label)
                plotted = True
    if not plotted:
        plt.close(fig)
        return None
    left.set_title("mean reward per step", fontsize=9)
    right.set_title("groups with no reward difference (no signal)", fontsize=9)
    right.set_ylim(-0.05, 1.05)
    from matplotlib.ticker import MaxNLocator

    for ax in (left, right):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("GRPO step")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return png

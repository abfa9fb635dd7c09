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
    return (f"{result.accuracy_text()} "
            f"(format ok {100 * (1 - result.format_error_rate):.0f}%)")


def _tasks(results: Results) -> list[str]:
    seen: dict[str, None] = {}
    for rs in results.values():
        for r in rs:
            seen.setdefault(r.task, None)
    return list(seen)


def _lookup(results: Results, label: str, task: str) -> EvalResult | None:
    return next((r for r in results[label] if r.task == task), None)


TITLE = "accuracy (%) [95% interval over questions] (share of well-formed answers)"


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


RUN_LABELS = ("base", "warmup", "rlvr", "rlvr-no-warmup", "rlvr-random-reward")  # a run's models, in table order


def _label_order(name: str) -> tuple[int, str]:
    arm = name.partition("-seed")[0]
    return (RUN_LABELS.index(arm) if arm in RUN_LABELS else len(RUN_LABELS), name)


def result_folders(paths: list[Path]) -> dict[str, Path]:
    """label → folder of each evaluated model in `lowres eval` output folders and/or `lowres run` folders
    (runs/<name>: one label per model, <name>/<model>)."""
    folders: dict[str, Path] = {}
    for path in map(Path, paths):
        if (path / "results.json").is_file():
            folders[path.name] = path
        elif (path / "eval").is_dir():
            for label_dir in sorted((path / "eval").iterdir(), key=lambda p: _label_order(p.name)):
                if (label_dir / "results.json").is_file():
                    folders[f"{path.name}/{label_dir.name}"] = label_dir
        else:
            raise UserError(f"{path}: no results here (expected a `lowres eval --out` folder or a runs/<name> folder)")
    if not folders:
        raise UserError("no evaluation results found in " + ", ".join(map(str, paths)))
    return folders


def collect(paths: list[Path]) -> Results:
    """Results from `lowres eval` output folders and/or `lowres run` folders (runs/<name>)."""
    return {label: load_results(folder) for label, folder in result_folders(paths).items()}


def _bounds(result: EvalResult | None) -> tuple[float, float]:
    """The bar's error range in points: its 95% interval, or ± std over samples for older results."""
    if result is None:
        return 0.0, 0.0
    if result.accuracy_low is None or result.accuracy_high is None:
        return 100 * (result.accuracy_mean - result.accuracy_std), 100 * (result.accuracy_mean + result.accuracy_std)
    return 100 * result.accuracy_low, 100 * result.accuracy_high


def sample_files(paths: list[Path]) -> dict[str, dict[str, Path]]:
    """label → task → samples.jsonl, for the same folders and labels as `collect` (a task's samples are in
    the folder named after it)."""
    return {label: {samples.parent.name: samples for samples in sorted(folder.glob("*/samples.jsonl"))}
            for label, folder in result_folders(paths).items()}


def source_labels(path: Path, labels: list[str]) -> list[str]:
    """The labels `collect` gave the models of one folder: the folder's name, or <run>/<model> for a run's."""
    name = Path(path).name
    return [label for label in labels if label == name or label.startswith(f"{name}/")]


def final_models(path: Path, labels: list[str]) -> list[str]:
    """The labels of what a source finally made: a `lowres eval` folder is itself; a run folder's is its rlvr
    arm (every seed), else its warmup, else its base, else its last evaluated model."""
    if (Path(path) / "results.json").is_file():
        return [Path(path).name]
    mine = source_labels(path, labels)
    for arm in ("rlvr", "warmup", "base"):
        chosen = [label for label in mine if label.partition("/")[2].partition("-seed")[0] == arm]
        if chosen:
            return chosen
    return mine[-1:]


def different_questions_notes(files: dict[str, dict[str, Path]]) -> list[str]:
    """A note for each task whose models did not all answer the same questions: their accuracies are not
    comparable side by side."""
    from lowres.evidence import right_by_question

    notes = []
    tasks = sorted({task for by_task in files.values() for task in by_task})
    for task in tasks:
        asked = {label: set(right_by_question(by_task[task])) for label, by_task in files.items() if task in by_task}
        if len(asked) > 1 and len({frozenset(q) for q in asked.values()}) > 1:
            common = set.intersection(*asked.values())
            sizes = ", ".join(f"{label} {len(q)}" for label, q in asked.items())
            notes.append(f"on {task} the models did not answer the same questions ({sizes}; {len(common)} in "
                         "common): their accuracies are over different questions and not comparable side by side")
    return notes


def plot_comparison(results: Results, png: Path) -> Path:
    """Grouped bars: one group per task, one bar per model, error bars = the 95% interval over questions
    (the std over samples for results written before intervals existed)."""
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
        bounds = [_bounds(r) for r in found]
        errors = [[m - low for m, (low, _) in zip(means, bounds, strict=True)],
                  [high - m for m, (_, high) in zip(means, bounds, strict=True)]]
        ax.bar(xs, means, width, yerr=errors, capsize=3, label=label)
    ax.set_xticks(range(len(tasks)), tasks)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8)
    ax.set_title("lowres: accuracy by task (bars: 95% interval over questions)", fontsize=9)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return png


def plot_reward_curves(curves: dict[str, Path], png: Path) -> Path | None:
    """GRPO runs side by side: each run's mean reward per step (left), its held-out accuracy (solid) and share
    of well-formed answers (dashed) when rlvr.heldout_every scored them (middle), and its share of groups whose
    completions all scored the same, which carry no learning signal (right). None if nothing logged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = {label: read_jsonl(metrics) if metrics.is_file() else [] for label, metrics in curves.items()}
    heldout = any("heldout_accuracy" in r for rs in records.values() for r in rs)
    fig, axes = plt.subplots(1, 3 if heldout else 2, figsize=(13 if heldout else 9, 3.2))
    left, right = axes[0], axes[-1]
    plotted = False

    def points(rs: list[dict], key: str) -> list[tuple[int, float]]:
        return [(r["step"], r[key]) for r in rs if isinstance(r.get(key), (int, float))]

    for label, rs in records.items():
        for ax, key in ((left, "reward"), (right, "frac_reward_zero_std")):
            if found := points(rs, key):
                ax.plot(*zip(*found, strict=True), marker="o", markersize=3, label=label)
                plotted = True
        if heldout:
            accuracy, formatted = points(rs, "heldout_accuracy"), points(rs, "heldout_formatted")
            if accuracy:
                line, = axes[1].plot(*zip(*[(s, 100 * v) for s, v in accuracy], strict=True), marker="o",
                                     markersize=3, label=f"{label}: right")
                axes[1].plot(*zip(*[(s, 100 * v) for s, v in formatted], strict=True), linestyle="--",
                             color=line.get_color(), label=f"{label}: well-formed")
    if not plotted:
        plt.close(fig)
        return None
    left.set_title("mean reward per step (train prompts)", fontsize=9)
    right.set_title("groups with no reward difference (no signal)", fontsize=9)
    right.set_ylim(-0.05, 1.05)
    if heldout:
        axes[1].set_title("held-out questions: % right (solid), % well-formed (dashed)", fontsize=9)
        axes[1].set_ylim(-2, 102)
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("GRPO step")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return png


def plot_pass_at_k(curves: dict[str, dict[str, dict[int, float]]], png: Path) -> Path | None:
    """pass@k against k, one panel per task, one line per model (an arm's seeds averaged). `curves`: label →
    task → k → pass@k. None when no model has more than one sample per question."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lowres.evidence import arm_groups

    tasks = sorted({task for by_task in curves.values() for task in by_task})
    if not tasks or max((len(c) for by_task in curves.values() for c in by_task.values()), default=0) < 2:
        return None
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.4), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        for arm, labels in arm_groups(sorted(curves, key=_label_order)).items():
            series = [curves[label][task] for label in labels if task in curves[label]]
            if not series:
                continue
            ks = sorted(set.intersection(*(set(c) for c in series)))
            ax.plot(ks, [100 * sum(c[k] for c in series) / len(series) for k in ks], marker="o", markersize=3,
                    label=arm + (f" ({len(series)} seeds)" if len(series) > 1 else ""))
        ax.set_xscale("log", base=2)
        ax.set_xlabel("k (samples per question)")
        ax.set_ylabel("pass@k (%)")
        ax.set_ylim(0, 100)
        ax.set_title(task, fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return png

"""The RLVR stage's training examples: chosen, counted and explained without loading a model, so the plan
(`lowres run --dry-run`) shows the number GRPO will really train on.

The examples are `data.target.n_examples` rows of the task's training split (or `data.target.path`) that share
no id and no question text with the questions the eval stage scores (lowres.tasks.sampling). Where fewer
rows are left than asked for, the stage trains on all of them and says so; where none is left, it stops with
what to change.
"""

from __future__ import annotations

from dataclasses import dataclass

from lowres.errors import UserError
from lowres.recipe import Recipe
from lowres.ui import console

# The paper's regime: RLVR on at most this many examples.
PAPER_MAX_EXAMPLES = 100


@dataclass
class TrainingExamples:
    rows: list[dict]   # the examples chosen
    asked: int         # data.target.n_examples
    total: int         # rows in the training split (or data.target.path)
    in_eval: int       # of them, questions the eval stage scores (never trained on)
    source: str        # where the rows come from, in words

    def notes(self) -> list[str]:
        """What a user should know about the number: fewer than asked, or more than the method is about."""
        notes = []
        if len(self.rows) < self.asked:
            notes.append(f"data.target.n_examples is {self.asked}, but {self.source} has {self.total} rows"
                         + (f", {self.in_eval} of them evaluation questions" if self.in_eval else "")
                         + f": GRPO trains on the {len(self.rows)} left")
        if len(self.rows) > PAPER_MAX_EXAMPLES:
            notes.append(f"the method is about ≤{PAPER_MAX_EXAMPLES} examples; {len(self.rows)} given")
        return notes


def rlvr_examples(recipe: Recipe, n: int | None = None) -> TrainingExamples:
    """The ≤n_examples (or ≤`n`: the informative selection's candidates) training rows, disjoint (by id and
    question text) from the rows the eval stage scores, with the counts that explain their number. A one-line
    UserError when none is left."""
    from lowres.tasks import get_task
    from lowres.tasks.sampling import eligible, row_text, sample_examples

    target = recipe.data.target
    task = get_task(target.task)
    scored = target.task in recipe.eval.tasks
    eval_rows = task.load("test", limit=recipe.eval.limit_for(target.task), seed=recipe.seed) if scored else []
    load_kwargs = {"category": target.category} if target.category else {}
    split = getattr(task, "train_split", "train")
    rows = task.load(split, seed=target.seed, path=target.path, **load_kwargs)
    exclude_ids, exclude_texts = [r.get("id") for r in eval_rows], [row_text(r) for r in eval_rows]
    available = len(eligible(rows, exclude_ids, exclude_texts))
    source = (f"data.target.path {target.path}" if target.path else
              f"{target.task}'s {split} split" + (f" ({target.category})" if target.category else ""))
    if not available:
        limit = recipe.eval.limit_for(target.task)
        key = "eval.limit" + (f".{target.task}" if isinstance(recipe.eval.limit, dict) else "")
        held = (f"{key} is {limit}" if limit is not None else f"{key} is not set, so the whole test split is "
                "scored")
        raise UserError(f"data.target: all {len(rows)} rows of {source} are also evaluation questions ({held}), so "
                        f"none is left to train on; set {key} below {len(rows)} to keep some out of the evaluation, or "
                        "point data.target.path at a file of other training rows")
    stratify_by = getattr(task, "stratify_by", None)
    asked = n or target.n_examples
    picked = sample_examples(rows, min(asked, available), seed=target.seed, stratify_by=stratify_by,
                             exclude_ids=exclude_ids, exclude_texts=exclude_texts)
    return TrainingExamples(picked, asked, len(rows), len(rows) - available, source)


def training_rows(recipe: Recipe, n: int | None = None) -> list[dict]:
    """The ≤N training examples (`n`, default data.target.n_examples; fewer when the data has fewer),
    disjoint (by id and question text) from the rows the eval stage scores; says
    when they are fewer than asked for, or more than the method is about."""
    examples = rlvr_examples(recipe, n)
    if n is None:
        for note in examples.notes():
            console.print(f"[yellow]rlvr: {note}[/yellow]")
    return examples.rows

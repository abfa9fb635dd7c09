"""Tasks defined in a recipe alone (`tasks:`): any JSONL, CSV, parquet or Hugging Face dataset, with field
mapping and a grader chosen by name.

    tasks:
      capitals:
        train: examples/capitals.jsonl      # or .csv, .parquet, .json, hf:org/name
        question: question                  # the field with the question
        answer: answer                      # the field with the gold answer
        grader: exact                       # math | number | exact | choice | code

Rows become `{"id", "question", "answer", "choices", "tests", "entry_point"}` (the fields the grader
needs; `id` is the row's `id` field if it has one, else `<task>/<split>/<index>`). Without `test:`, the
test split is a seeded `test_fraction` share of the train rows and the train split is the rest, so the
two never share a row. The graders reuse the built-in tasks' code:

- math:   the last \\boxed{} (else the <answer>) equals the gold answer (math-verify, as the math task);
- number: the number in \\boxed{} or <answer> (as gsm8k) is within `tolerance` × max(1, |gold|) of it;
- exact:  the <answer> content equals the gold answer after normalising case, spaces and surrounding
          punctuation;
- choice: the option letter (as mmlu_pro) is the gold one; the options are shown as A., B., …;
- code:   the completion's code followed by the row's tests (and `check(<entry_point>)`) runs to the end
          in the sandbox (as humaneval_plus).

Scores never raise: an answer the grader cannot read is wrong (and unformatted).
"""

from __future__ import annotations

import csv
import random
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation, localcontext
from pathlib import Path
from typing import Any, Literal

from lowres.errors import RecipeError, UserError
from lowres.fields import REQUIRED, setting
from lowres.tasks.answers import answer_tag, last_boxed, last_number, parse_number
from lowres.tasks.base import DEFAULT_REWARDS, R1_SYSTEM, RewardValues, Score
from lowres.tasks.data import SUFFIXES, DataNotLocal, load_hub_dataset, read_rows_with_lines, require_columns

HF_PREFIX = "hf:"
# The seed of the train/test partition when the test split is derived from train: fixed, so the
# training stage (data.target.seed) and the evaluation (the recipe's seed) agree on it.
SPLIT_SEED = 0
CODE_TIMEOUT_S = 30.0
CODE_MEMORY_MB = 2048
MAX_CHOICES = 10  # the letters A-J that the choice extraction reads

_INSTRUCTIONS = {
    "math": "\n\nReason step by step. Put your final answer within \\boxed{} inside the <answer> </answer> tags.",
    "number": "\n\nReason step by step. Put the final number within \\boxed{} inside the <answer> </answer> tags.",
    "exact": "\n\nPut only the final answer inside the <answer> </answer> tags.",
    "choice": "\n\nThink step by step, then finish with <answer> \\boxed{X} </answer> where X is the letter of "
              "the correct option.",
    "code": "\n\nWrite the Python code. Put it, with the imports it needs, in a ```python code block inside the "
            "<answer> </answer> tags.",
}


def _letters() -> str:
    from lowres.tasks.mmlu_pro import LETTERS

    return LETTERS


def normalize_exact(text: Any) -> str:
    """Case, runs of whitespace and punctuation around the text do not matter: " Paris. " == "paris"."""
    s = unicodedata.normalize("NFKC", str(text)).casefold()
    s = re.sub(r"\s+", " ", s).strip()
    return s.strip(" \t\n.,;:!?\"'`()[]{}").strip()


# An exact or math answer longer than this is a solution rather than an answer (a gold answer is compared whole).
MAX_ANSWER_CHARS = 200


def worked_solution(answer: str) -> str | None:
    """Why a gold answer looks like a whole worked solution (GSM8K's `answer` column: the steps, then
    `#### 42`), or None: it holds '####', spans several lines, or is longer than MAX_ANSWER_CHARS."""
    text = answer.strip()
    if "####" in text:
        return "it holds '####'"
    lines = text.count("\n") + 1
    if lines > 1:
        return f"{lines} lines"
    if len(text) > MAX_ANSWER_CHARS:
        return f"{len(text)} characters"
    return None


def numbers_close(pred: str | None, gold: str | None, tolerance: float) -> bool:
    """|pred - gold| <= tolerance × max(1, |gold|), in exact decimal arithmetic (never raises)."""
    if pred is None or gold is None:
        return False
    try:
        with localcontext() as ctx:
            ctx.prec = 200
            x, y = Decimal(pred), Decimal(gold)
            if not (x.is_finite() and y.is_finite()):
                return False
            return abs(x - y) <= Decimal(repr(float(tolerance))) * max(Decimal(1), abs(y))
    except (InvalidOperation, ValueError, ArithmeticError):
        return False


def read_table(path: str | Path) -> tuple[list[dict[str, Any]], list[int] | None]:
    """(rows, lines) of a data file; a .csv file is read with the csv module (a header row, then one row
    per record; each row is named by the line it starts on)."""
    path = Path(path).expanduser()
    if not path.name.lower().endswith(".csv"):
        return read_rows_with_lines(path)
    if not path.is_file():
        raise UserError(f"data file {path} {'is a folder' if path.is_dir() else 'does not exist'}")
    rows: list[dict[str, Any]] = []
    lines: list[int] = []
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if not header or not any(h.strip() for h in header):
                raise UserError(f"{path}: empty CSV file (expected a header row of field names)")
            header = [h.strip() for h in header]
            start = reader.line_num + 1
            for record in reader:
                if not any(cell.strip() for cell in record):
                    start = reader.line_num + 1
                    continue
                if len(record) > len(header):
                    raise UserError(f"{path}:{start}: {len(record)} values but the header names "
                                    f"{len(header)} fields")
                rows.append(dict(zip(header, record, strict=False)))
                lines.append(start)
                start = reader.line_num + 1
    except csv.Error as e:
        raise UserError(f"{path}:{reader.line_num}: not valid CSV ({e})") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read it ({type(e).__name__})") from None
    if not rows:
        raise UserError(f"{path}: no rows after the header")
    return rows, lines


def load_hf(name: str, config: str | None, split: str, what: str) -> list[dict[str, Any]]:
    """Rows of `datasets.load_dataset(name, config, split=split)`; `name` may be a local folder."""
    try:
        import datasets  # noqa: F401 (whether it is installed, for a message naming the package)
    except ImportError:
        raise UserError(f"{what}: loading hf:{name} needs the `datasets` package: pip install datasets") from None
    try:
        return load_hub_dataset(name, config, split, what)
    except DataNotLocal:
        raise
    except Exception as exc:  # offline, gated, renamed, no such split: one line the user can act on
        text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise UserError(f"{what}: could not load hf:{name} (config {config}, split {split}): "
                        f"{type(exc).__name__}: {text}") from None


@dataclass
class TaskSpecSection:
    """A task defined in the recipe alone: a data file or hub dataset, field names and a grader."""

    train: str = setting(REQUIRED, help="training rows: a .jsonl, .jsonl.gz, .json, .csv or .parquet file "
                         "(relative to the working folder), or hf:org/name (a Hugging Face dataset, or "
                         "hf:/path/to/a/local/folder)")
    test: str | None = setting(None, help="evaluation rows, in the same forms as train; None: a seeded "
                               "test_fraction share of train, disjoint from the rest (which is then the train split)")
    test_fraction: float = setting(0.5, min=0.0, max=1.0, min_exclusive=True,
                                   help="share of train held out as the test split when test is not given")
    hf_config: str | None = setting(None, help="the Hugging Face dataset's configuration (load_dataset's name)")
    train_split: str = setting("train", help="split of a hf: train dataset")
    test_split: str = setting("test", help="split of a hf: test dataset")
    question: str = setting(REQUIRED, help="the field holding the question text")
    answer: str | None = setting(None, help="the field holding the gold answer (required except for grader code)")
    choices: str | None = setting(None, help="the field holding the list of options (grader choice: shown as A., "
                                  "B., …; the answer is a letter, an option's index from 0, or the option's text)")
    tests: str | None = setting(None, help="the field holding Python test code run after the model's code "
                                "(grader code)")
    entry_point: str | None = setting(None, help="grader code: the field naming the function the tests check "
                                      "(check(<entry_point>) is then called after the tests)")
    system_prompt: str | None = setting(None, help="the system turn; None: lowres's R1 prompt (<think> then "
                                        "<answer>)")
    grader: Literal["math", "number", "exact", "choice", "code"] = setting(
        REQUIRED, help="math: math-verify equivalence; number: numeric within tolerance; exact: normalised "
        "string of the <answer>; choice: the option letter; code: run the code and the tests field in the sandbox")
    tolerance: float = setting(1e-6, min=0.0, help="grader number: |answer - gold| <= tolerance × max(1, |gold|)")


def check_task_spec(spec: TaskSpecSection, where: str, source: str) -> None:
    """The fields a spec's grader needs, and data sources lowres can read (files are read later)."""
    needs = {"math": "answer", "number": "answer", "exact": "answer", "choice": "choices", "code": "tests"}
    field_name = needs[spec.grader]
    if getattr(spec, field_name) is None:
        raise RecipeError.at(source, f"{where}.{field_name}", f"grader {spec.grader} needs the name of the field "
                             f"holding the {'options' if field_name == 'choices' else field_name}")
    if spec.grader == "choice" and spec.answer is None:
        raise RecipeError.at(source, f"{where}.answer", "grader choice needs the name of the field holding the answer")
    for key in ("train", "test"):
        value = getattr(spec, key)
        if value is None or value.startswith(HF_PREFIX):
            if value is not None and not value[len(HF_PREFIX):].strip():
                raise RecipeError.at(source, f"{where}.{key}", "hf: needs a dataset name, e.g. hf:openai/gsm8k")
            continue
        if not value.lower().endswith((*SUFFIXES, ".csv")):
            raise RecipeError.at(source, f"{where}.{key}", f"{value!r}: expected a "
                                 f"{', '.join((*SUFFIXES, '.csv'))} file or hf:org/name")


def register_spec_tasks(specs: dict[str, TaskSpecSection], source: str, prefix: str = "tasks") -> None:
    """Check each spec and register its GenericTask, so data.target.task and eval.tasks can name it."""
    from lowres.tasks import _BUILTIN, _REGISTERED, register_task

    for name, spec in specs.items():
        where = f"{prefix}.{name}"
        if not name.strip() or "," in name or "=" in name:
            raise RecipeError.at(source, where, f"a task name needs no commas or '=' (got {name!r})")
        if name in _BUILTIN:
            raise RecipeError.at(source, where, f"{name!r} is a built-in task; give yours another name")
        existing = _REGISTERED.get(name)
        if existing is not None and not isinstance(existing, GenericTask):
            raise RecipeError.at(source, where, f"a plugin already registers a task named {name!r}; give this one "
                                 "another name")
        check_task_spec(spec, where, source)
        register_task(GenericTask(name, spec))


class GenericTask:
    """A task from a recipe's `tasks:` spec; see the module docstring."""

    stratify_by = None
    train_split = "train"

    def __init__(self, name: str, spec: TaskSpecSection, rewards: RewardValues = DEFAULT_REWARDS,
                 timeout_s: float = CODE_TIMEOUT_S, memory_mb: int = CODE_MEMORY_MB, workers: int | None = None):
        self.name = name
        self.spec = spec
        self.rewards = rewards
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self.workers = workers
        source = spec.train if spec.test is None else f"{spec.train} / {spec.test}"
        self.description = f"{name}: {source}, grader {spec.grader}"
        self._cache: dict[tuple, list[dict[str, Any]]] = {}

    # ------------------------------------------------------------------ data
    def _read(self, source: str, hf_split: str | None, what: str, tag: str) -> list[dict[str, Any]]:
        """Rows of one source, checked: every row has the spec's fields, of usable types. `tag` names the
        source in the ids of rows without an `id` field (`<task>/<tag>/<index>`), so a train file's row 3
        and a test file's row 3 are different questions."""
        spec = self.spec
        columns = [spec.question] + [f for f in (spec.answer, spec.choices, spec.tests) if f is not None]
        types: dict[str, Any] = {spec.question: str}
        if spec.choices is not None:
            types[spec.choices] = list
        if spec.tests is not None:
            types[spec.tests] = str
        if spec.entry_point is not None:
            columns.append(spec.entry_point)
            types[spec.entry_point] = str
        if spec.answer is not None and spec.answer not in types:
            types[spec.answer] = (str, int, float)
        if source.startswith(HF_PREFIX):
            name = source[len(HF_PREFIX):].strip()
            rows, lines, where = load_hf(name, spec.hf_config, hf_split, what), None, f"hf:{name} ({hf_split})"
        else:
            rows, lines = read_table(source)
            where = str(source)
            if spec.choices is not None and source.lower().endswith(".csv"):
                _parse_csv_lists(rows, spec.choices, where, lines)
        require_columns(rows, columns, where, types, lines)
        return [self._normalize(row, index, where, lines, tag) for index, row in enumerate(rows)]

    def _normalize(self, row: dict[str, Any], index: int, where: str, lines: Sequence[int] | None,
                   tag: str) -> dict[str, Any]:
        spec = self.spec
        at = f"{where}:{lines[index]}" if lines is not None else f"{where}: row {index + 1}"
        row_id = row.get("id")
        out: dict[str, Any] = {
            "id": str(row_id) if row_id not in (None, "") else f"{self.name}/{tag}/{index}",
            "question": row[spec.question],
        }
        if spec.answer is not None:
            answer = row[spec.answer]
            if isinstance(answer, bool) or not str(answer).strip():
                raise UserError(f"{at}: field '{spec.answer}': an empty answer")
            out["answer"] = answer if isinstance(answer, str) else str(answer)
        if spec.grader in ("exact", "math"):
            why = worked_solution(out["answer"])
            if why:
                raise UserError(f"{at}: field '{spec.answer}' looks like a worked solution, not a final answer ({why}: "
                                f"{out['answer'][:60]!r}); grader {spec.grader} compares the whole field, so every "
                                "completion would be graded wrong: use grader: number (it takes the field's last "
                                "number, e.g. the one after ####), or an answer field that holds only the final answer")
        if spec.grader == "number":
            gold = parse_number(str(row[spec.answer]).strip()) or last_number(str(row[spec.answer]))
            if gold is None:
                raise UserError(f"{at}: field '{spec.answer}': grader number needs a number, got "
                                f"{str(row[spec.answer])[:60]!r}")
            out["answer"] = gold
        if spec.grader == "choice":
            options = [str(option) for option in row[spec.choices]]
            if not 2 <= len(options) <= MAX_CHOICES:
                raise UserError(f"{at}: field '{spec.choices}': grader choice needs 2-{MAX_CHOICES} options, "
                                f"got {len(options)}")
            out["choices"] = options
            out["answer"] = self._gold_letter(row[spec.answer], options, at)
        if spec.grader == "code":
            out["tests"] = row[spec.tests]
            out["entry_point"] = row[spec.entry_point] if spec.entry_point is not None else None
        return out

    def _gold_letter(self, answer: Any, options: list[str], at: str) -> str:
        """The gold option's letter from a letter ("B"), a 0-based index (1) or the option's text."""
        letters = _letters()[:len(options)]
        text = str(answer).strip()
        if isinstance(answer, str) and len(text) == 1 and text.upper() in letters:
            return text.upper()
        if isinstance(answer, int) and not isinstance(answer, bool) and 0 <= answer < len(options):
            return letters[answer]
        if isinstance(answer, str) and text.isdigit() and int(text) < len(options):
            return letters[int(text)]
        matches = [i for i, option in enumerate(options) if normalize_exact(option) == normalize_exact(text)]
        if len(matches) == 1:
            return letters[matches[0]]
        raise UserError(f"{at}: field '{self.spec.answer}': {text[:60]!r} is not a letter {letters[0]}-{letters[-1]}, "
                        f"an option index from 0, or the text of one of the {len(options)} options")

    def _rows(self, split: str, path: str | None) -> list[dict[str, Any]]:
        key = (split, path)
        if key not in self._cache:
            self._cache[key] = self._load_uncached(split, path)
        return self._cache[key]

    def _load_uncached(self, split: str, path: str | None) -> list[dict[str, Any]]:
        spec = self.spec
        what = f"task {self.name} ({split})"
        if path is not None and split == "train":  # data.target.path: another training file
            return self._read(str(path), spec.train_split, what, "train")
        if split == "test" and spec.test is not None:
            return self._read(spec.test, spec.test_split, what, "test")
        rows = self._read(spec.train, spec.train_split, f"task {self.name} (train)", "train")
        if spec.test is not None:
            return rows
        train, test = derived_split(rows, spec.test_fraction)
        if not train or not test:
            raise UserError(f"task {self.name}: {spec.train} has {len(rows)} rows, too few to hold out a "
                            f"test_fraction of {spec.test_fraction} (give a test: file, or more rows)")
        return test if split == "test" else train

    def load(self, split: str, limit: int | None = None, seed: int = 0, path: str | None = None,
             **_: Any) -> list[dict[str, Any]]:
        """Rows with `id`, `question` and the grader's fields; `limit` takes a seeded sample."""
        if split not in ("train", "test"):
            raise UserError(f"task {self.name} has splits train and test; got {split!r}")
        rows = [dict(row) for row in self._rows(split, path)]
        if limit is not None and limit < len(rows):
            from lowres.tasks.sampling import sample_examples

            rows = sample_examples(rows, limit, seed)
        return rows

    # ------------------------------------------------------------------ prompting and grading
    def prompt(self, row: dict[str, Any]) -> list[dict[str, str]]:
        question = str(row["question"])
        if self.spec.grader == "choice":
            options = "\n".join(f"{letter}. {option}" for letter, option in zip(_letters(), row["choices"],
                                                                                  strict=False))
            question = f"{question}\n\nOptions:\n{options}"
        system = self.spec.system_prompt if self.spec.system_prompt is not None else R1_SYSTEM
        messages = [{"role": "system", "content": system}] if system else []
        return messages + [{"role": "user", "content": question + _INSTRUCTIONS[self.spec.grader]}]

    def score(self, completion: str, row: dict[str, Any]) -> Score:
        try:
            formatted, correct, extracted = self._grade(completion, row)
        except Exception:  # a grader must never take a training step down
            formatted, correct, extracted = False, False, None
        return Score(formatted, correct, self.rewards.reward(formatted, correct), extracted)

    def _grade(self, completion: str, row: dict[str, Any]) -> tuple[bool, bool, str | None]:
        grader = self.spec.grader
        if not isinstance(completion, str):
            return False, False, None
        if grader == "math":
            from lowres.tasks.math import math_equal

            boxed = last_boxed(completion)
            extracted = boxed if boxed is not None else answer_tag(completion)
            correct = extracted is not None and math_equal(str(row["answer"]), extracted)
            return boxed is not None, correct, extracted
        if grader == "number":
            from lowres.tasks.gsm8k import extract_answer

            extracted, formatted = extract_answer(completion)
            return formatted, numbers_close(extracted, str(row["answer"]), self.spec.tolerance), extracted
        if grader == "exact":
            extracted = answer_tag(completion)
            if extracted is None:
                return False, False, None
            return True, normalize_exact(extracted) == normalize_exact(row["answer"]), extracted
        if grader == "choice":
            from lowres.tasks.mmlu_pro import extract_letter

            letter, formatted = extract_letter(completion)
            if letter is not None and letter not in _letters()[:len(row["choices"])]:
                letter = None
            return formatted, letter is not None and letter == row["answer"], letter
        from lowres.sandbox import run_python
        from lowres.tasks.humaneval_plus import extract_code

        code, formatted = extract_code(completion)
        result = run_python(self.program(code, row), timeout_s=self.timeout_s, memory_mb=self.memory_mb)
        return formatted, bool(result.passed), code

    def program(self, code: str, row: dict[str, Any]) -> str:
        """Grader code: the program the sandbox runs (the model's code, the tests, the check call)."""
        check = f"\n\ncheck({row['entry_point']})\n" if row.get("entry_point") else "\n"
        return f"{code}\n\n{row['tests']}{check}"

    def score_many(self, completions: Sequence[str], rows: Sequence[dict[str, Any]]) -> list[Score]:
        """`score` for a batch; grader code runs the programs in parallel."""
        if self.spec.grader != "code":
            return [self.score(c, row) for c, row in zip(completions, rows, strict=True)]
        from lowres.sandbox import run_many
        from lowres.tasks.humaneval_plus import extract_code

        extracted = [extract_code(c) for c in completions]
        programs = [self.program(code, row) for (code, _), row in zip(extracted, rows, strict=True)]
        results = run_many(programs, workers=self.workers, timeout_s=self.timeout_s, memory_mb=self.memory_mb)
        return [Score(fmt, bool(r.passed), self.rewards.reward(fmt, bool(r.passed)), code)
                for (code, fmt), r in zip(extracted, results, strict=True)]


def _parse_csv_lists(rows: list[dict[str, Any]], column: str, where: str, lines: Sequence[int] | None) -> None:
    """A CSV cell holds text: the options field is a JSON list (["Paris", "Rome"]) or `|`-separated."""
    import json

    for index, row in enumerate(rows):
        value = row.get(column)
        if not isinstance(value, str):
            continue
        text = value.strip()
        if text.startswith("["):
            try:
                parsed = json.loads(text)
            except json.JSONDecodeError as e:
                at = f"{where}:{lines[index]}" if lines else f"{where}: row {index + 1}"
                raise UserError(f"{at}: field '{column}': not a JSON list ({e.msg})") from None
            row[column] = parsed
        else:
            row[column] = [part.strip() for part in text.split("|")]


def derived_split(rows: list[dict[str, Any]], test_fraction: float) -> tuple[list[dict], list[dict]]:
    """(train, test): a seeded `test_fraction` share of `rows` (at least one row) as test, the rest as
    train, each in file order. The same rows always split the same way."""
    n_test = max(1, round(len(rows) * test_fraction)) if rows else 0
    chosen = set(random.Random(SPLIT_SEED).sample(range(len(rows)), min(n_test, len(rows))))
    train = [row for i, row in enumerate(rows) if i not in chosen]
    test = [row for i, row in enumerate(rows) if i in chosen]
    return train, test

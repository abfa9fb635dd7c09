"""Recipe parsing, validation messages and overrides."""

from pathlib import Path

import pytest
import yaml

from lowres.errors import UserError
from lowres.recipe import (
    RecipeError,
    bundled_recipes,
    dump_recipe,
    load_recipe,
    recipe_from_dict,
    resolve_recipe_path,
)

MINIMAL = "name: t\nmodel:\n  name_or_path: embedded:smollm2-135m\n"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path


def test_minimal_recipe_gets_defaults(tmp_path):
    recipe = load_recipe(write(tmp_path, MINIMAL))
    assert recipe.name == "t"
    assert recipe.stages == ["warmup", "merge", "rlvr", "eval"]
    assert recipe.rlvr.beta == 0.0 and recipe.rlvr.num_generations == 8
    assert recipe.rlvr.temperature == 0.7 and recipe.rlvr.top_p == 0.95
    assert recipe.warmup.lora.r == 16
    assert recipe.run_dir == Path("runs") / "t"


def test_yaml_scientific_notation_without_dot_is_a_float(tmp_path):
    # YAML 1.1 reads 1e-6 as a string; a learning rate written that way must still work.
    recipe = load_recipe(write(tmp_path, MINIMAL + "rlvr:\n  learning_rate: 1e-6\n"))
    assert recipe.rlvr.learning_rate == pytest.approx(1e-6)


def test_an_unquoted_off_is_the_word_off_not_a_boolean(tmp_path):
    # YAML 1.1 reads `off` as false; a choice that has the word "off" must get it, in a file and in --set.
    recipe = load_recipe(write(tmp_path, MINIMAL + "rlvr:\n  signal_check: off\n"))
    assert recipe.rlvr.signal_check == "off"
    assert load_recipe(write(tmp_path, MINIMAL), ["rlvr.signal_check=off"]).rlvr.signal_check == "off"
    with pytest.raises(RecipeError, match="rlvr.loss_type: expected one of .*got False"):
        load_recipe(write(tmp_path, MINIMAL + "rlvr:\n  loss_type: off\n"))


def test_int_widens_to_float(tmp_path):
    recipe = load_recipe(write(tmp_path, MINIMAL + "warmup:\n  num_train_epochs: 2\n"))
    assert recipe.warmup.num_train_epochs == 2.0 and isinstance(recipe.warmup.num_train_epochs, float)


def test_overrides_are_applied_and_validated(tmp_path):
    path = write(tmp_path, MINIMAL)
    recipe = load_recipe(path, ["rlvr.learning_rate=1e-6", "eval.tasks=[kk, gsm8k]",
                                "warmup.lora.r=8", "rlvr.epsilon_high=0.28"])
    assert recipe.rlvr.learning_rate == pytest.approx(1e-6)
    assert recipe.eval.tasks == ["kk", "gsm8k"]
    assert recipe.warmup.lora.r == 8
    assert recipe.rlvr.epsilon_high == pytest.approx(0.28)
    with pytest.raises(RecipeError, match=r"^--set rlvr\.lerning_rate=1e-6: unknown key; did you mean 'learning_rate'"):
        load_recipe(path, ["rlvr.lerning_rate=1e-6"])
    with pytest.raises(RecipeError, match="expected KEY.PATH=VALUE"):
        load_recipe(path, ["rlvr.learning_rate"])
    with pytest.raises(RecipeError, match="name is not a section"):
        load_recipe(path, ["name.x=1"])


def test_override_creates_missing_section(tmp_path):
    recipe = load_recipe(write(tmp_path, MINIMAL), ["merge.tolerance=0.5"])
    assert recipe.merge.tolerance == 0.5


# (recipe text, expected message fragment) — every case must fail with exactly this kind of message.
MALFORMED = [
    ("name: t\nmodel:\n  name_or_path: m\n  lerning: 1\n",
     "r.yaml: model.lerning: unknown key; known keys: name_or_path, dtype"),
    ("name: t\nmodel:\n  name_or_path: m\nrlvr:\n  num_generation: 8\n",
     "rlvr.num_generation: unknown key; did you mean 'num_generations'?"),
    ("name: t\nmodel:\n  name_or_path: m\nwarmpu: {}\n", "warmpu: unknown key; did you mean 'warmup'?"),
    ("model:\n  name_or_path: m\n", "name: missing required key"),
    ("name: t\n", "model.name_or_path: missing required key"),
    ("name: t\nmodel:\n  name_or_path: m\nrlvr:\n  num_generations: eight\n",
     "rlvr.num_generations: expected an integer, got 'eight'"),
    ("name: t\nmodel:\n  name_or_path: m\nrlvr:\n  learning_rate: fast\n",
     "rlvr.learning_rate: expected a number, got 'fast'"),
    ("name: t\nmodel:\n  name_or_path: m\nwarmup:\n  load_in_4bit: 'yes please'\n",
     "warmup.load_in_4bit: expected true or false"),
    ("name: t\nmodel:\n  name_or_path: m\nrlvr:\n  temperature: 0\n", "rlvr.temperature: must be > 0.0, got 0.0"),
    ("name: t\nmodel:\n  name_or_path: m\nrlvr:\n  top_p: 1.5\n", "rlvr.top_p: must be <= 1.0, got 1.5"),
    ("name: t\nmodel:\n  name_or_path: m\nwarmup:\n  lora:\n    r: 0\n", "warmup.lora.r: must be >= 1, got 0"),
    ("name: t\nmodel:\n  name_or_path: m\nrlvr:\n  loss_type: ppo\n",
     "rlvr.loss_type: expected one of 'grpo', 'dr_grpo', 'dapo', 'bnpo', got 'ppo'"),
    ("name: t\nmodel:\n\tname_or_path: m\n", "r.yaml:3: YAML syntax error"),  # a tab as indentation
    ("name: t\nmodel:\n  name_or_path: m\n  dtype: [bf16\n", "r.yaml:5: YAML syntax error"),
    ("name: t\nmodel: embedded\n", "model: expected a mapping (section), got 'embedded'"),
    ("- name: t\n", "the top level must be a mapping of sections, got list"),
    ("name: t\nmodel:\n  name_or_path: m\nstages: [rlvr, warmup]\n",
     "stages: list each stage once, in the order warmup, merge, rlvr, rlvr-no-warmup, rlvr-random-reward, eval"),
    ("name: t\nmodel:\n  name_or_path: m\nstages: [train]\n",
     "stages[0]: expected one of 'warmup', 'merge', 'rlvr', 'rlvr-no-warmup', 'rlvr-random-reward', 'eval', "
     "got 'train'"),
    ("name: t\nmodel:\n  name_or_path: m\nstages: [rlvr-no-warmup, eval]\n",
     "stages: rlvr-no-warmup is the baseline for an rlvr stage that starts from the warmup"),
    ("name: t\nmodel:\n  name_or_path: m\nstages: [rlvr, rlvr-no-warmup]\nrlvr:\n  start_from: base\n",
     "stages: rlvr-no-warmup is the baseline for an rlvr stage that starts from the warmup"),
    ("name: t\nmodel:\n  name_or_path: m\ndata:\n  warmup:\n    source: t.jsonl\n    trace_style: brief\n",
     "data.warmup.trace_style: applies to kk-solver traces only"),
    ("name: t\nmodel:\n  name_or_path: m\ndata:\n  warmup:\n    trace_style: short\n",
     "data.warmup.trace_style: expected one of 'full', 'brief', got 'short'"),
    ("name: t\nmodel:\n  name_or_path: m\nstages: [rlvr, eval]\n",
     "rlvr.start_from: 'warmup' needs the warmup and merge stages"),
    ("name: t\nmodel:\n  name_or_path: m\nrlvr:\n  per_device_train_batch_size: 6\n",
     "must be a multiple of rlvr.num_generations (8)"),
    ("name: t\nmodel:\n  name_or_path: m\nnum_processes: 3\nrlvr:\n  per_device_train_batch_size: 4\n",
     "num_processes (4 × 1 × 3 = 12) must be a multiple of rlvr.num_generations (8); change one of these numbers"),
    ("name: t\nmodel:\n  name_or_path: m\nnum_processes: 0\n", "num_processes: "),
    ("name: t\nmodel:\n  name_or_path: m\ndata:\n  warmup:\n    people: [1, 3, 9]\n",
     "data.warmup.people: puzzle sizes must be 2-8, got [1, 9]"),
    ("name: t\nmodel:\n  name_or_path: m\neval:\n  tasks: kk\n",
     "eval.tasks: expected a list (each a string), got 'kk'"),
    ("name: t\nmodel:\n  name_or_path: m\nrlvr:\n  max_prompt_length: 1024\n  max_completion_length: 4096\n",
     "exceeds model.max_seq_length (2048)"),
    ("name: t\nmodel:\n  name_or_path: m\nstages: []\n", "stages: name at least one of"),
]


@pytest.mark.parametrize(("text", "message"), MALFORMED, ids=[m for _, m in MALFORMED])
def test_malformed_recipe_message(tmp_path, text, message):
    with pytest.raises(RecipeError) as info:
        load_recipe(write(tmp_path, text))
    text_of_error = str(info.value)
    assert message in text_of_error
    assert "\n" not in text_of_error  # one line
    assert text_of_error.startswith(str(tmp_path / "r.yaml"))  # names the file
    assert isinstance(info.value, UserError)


def test_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(RecipeError, match="no such recipe file"):
        load_recipe(tmp_path / "nope.yaml")


def test_empty_file_says_what_is_missing(tmp_path):
    with pytest.raises(RecipeError, match="name: missing required key"):
        load_recipe(write(tmp_path, ""))


def test_every_bundled_recipe_validates_and_round_trips():
    recipes = bundled_recipes()
    assert "demo" in recipes
    for name, path in recipes.items():
        recipe = load_recipe(path)
        assert recipe.name == name, f"{path}: name should match the file name"
        assert recipe.description, f"{path}: needs a one-line description"
        again = recipe_from_dict(yaml.safe_load(dump_recipe(recipe)), "dump")
        assert again.to_dict() == recipe.to_dict()


def test_top_level_recipes_folder_is_the_bundled_one():
    top = Path(__file__).resolve().parents[1] / "recipes"
    assert sorted(p.name for p in top.glob("*.yaml")) == sorted(p.name for p in bundled_recipes().values())
    assert top.resolve() == next(iter(bundled_recipes().values())).parent.resolve()


def test_resolve_recipe_by_name_suggests_close_names():
    assert resolve_recipe_path("demo").name == "demo.yaml"
    with pytest.raises(RecipeError, match="did you mean 'demo'"):
        resolve_recipe_path("dmeo")


def test_a_bad_set_value_blames_the_set_not_the_file(tmp_path):
    path = write(tmp_path, MINIMAL)
    with pytest.raises(RecipeError) as caught:
        load_recipe(path, ["rlvr.learning_rate=fast"])
    assert str(caught.value) == "--set rlvr.learning_rate=fast: expected a number, got 'fast'"
    # A consistency rule broken by a --set names the --set too.
    with pytest.raises(RecipeError, match=r"^--set rlvr.num_generations=3: the global batch"):
        load_recipe(path, ["rlvr.num_generations=3"])
    # A problem in the file itself still names the file.
    bad = write(tmp_path, MINIMAL.replace("name: t", "name: t\nseed: x"))
    with pytest.raises(RecipeError, match=r"r.yaml: seed: expected an integer"):
        load_recipe(bad, ["rlvr.learning_rate=1e-5"])


def test_eval_limit_is_a_number_or_a_mapping_per_task(tmp_path):
    path = write(tmp_path, MINIMAL)
    recipe = load_recipe(path, ["eval.tasks=[math, humaneval_plus]", "eval.limit={humaneval_plus: 164}"])
    assert recipe.eval.limit_for("humaneval_plus") == 164
    assert recipe.eval.limit_for("math") is None  # not capped by the code task's number
    assert load_recipe(path, ["eval.limit=50"]).eval.limit_for("kk") == 50
    with pytest.raises(RecipeError, match=r"--set eval.limit={mmlu_pro: 3}: 'mmlu_pro' is not one of eval.tasks"):
        load_recipe(path, ["eval.tasks=[math]", "eval.limit={mmlu_pro: 3}"])
    with pytest.raises(RecipeError, match=r"--set eval.limit={math: 0}: must be >= 1"):
        load_recipe(path, ["eval.tasks=[math]", "eval.limit={math: 0}"])


def test_an_empty_run_name_is_refused(tmp_path):
    for name in ('""', "'  '", "a/b", ".."):
        with pytest.raises(RecipeError, match="give the run a folder name"):
            load_recipe(write(tmp_path, MINIMAL), [f"name={name}"])
    with pytest.raises(RecipeError, match=r"r.yaml: name: give the run a folder name"):
        load_recipe(write(tmp_path, 'name: ""\nmodel: {name_or_path: embedded:smollm2-135m}\n'))


def test_a_run_name_longer_than_a_folder_name_can_be_is_refused(tmp_path):
    assert load_recipe(write(tmp_path, MINIMAL), ["name=" + "a" * 255]).name == "a" * 255
    with pytest.raises(RecipeError, match=r"--set name=a+: the run's folder name is 300 bytes; file systems allow at "
                                          r"most 255: give a shorter name"):
        load_recipe(write(tmp_path, MINIMAL), ["name=" + "a" * 300])
    with pytest.raises(RecipeError, match="is 256 bytes"):  # counted in bytes, as file systems count: é is 2
        load_recipe(write(tmp_path, MINIMAL), ["name=" + "é" * 128])


@pytest.mark.parametrize("setting, where, value", [
    ("seed=-1", "seed", -1), ("seeds=[-1]", "seeds[0]", -1), ("seeds=[3, 4294967296]", "seeds[1]", 4294967296),
])
def test_a_seed_numpy_and_torch_refuse_is_refused(tmp_path, setting, where, value):
    with pytest.raises(RecipeError) as e:
        load_recipe(write(tmp_path, MINIMAL), [setting])
    assert str(e.value) == (f"--set {setting}: a seed must be in 0..4294967295 (numpy and torch refuse others), "
                            f"got {value}")
    assert e.value.where == where
    recipe = load_recipe(write(tmp_path, MINIMAL), ["seed=0", "seeds=[4294967295]"])  # the ends are fine
    assert recipe.seeds == [4294967295]


@pytest.mark.parametrize("overrides, expected", [
    (["warmup.max_steps=1"], "--set warmup.max_steps=1: 1 step with warmup_ratio 0.05 (lr_scheduler_type cosine) "
                             "trains at learning rate 0: the warmup takes ceil(0.05 × 1) = 1 step and starts from 0, "
                             "so the weights never move; set warmup.warmup_ratio: 0, warmup.lr_scheduler_type: "
                             "constant, or warmup.max_steps: 2 or more"),
    (["rlvr.max_steps=1", "rlvr.warmup_ratio=0.1"], "--set rlvr.max_steps=1: 1 step with warmup_ratio 0.1 "
                                                    "(lr_scheduler_type linear) trains at learning rate 0"),
    (["rlvr.max_steps=0"], "--set rlvr.max_steps=0: 0 trains no step; set -1 (run num_train_epochs) or at least 1"),
    (["warmup.max_steps=0"], "--set warmup.max_steps=0: 0 trains no step"),
])
def test_a_schedule_that_never_moves_the_weights_is_refused(tmp_path, overrides, expected):
    with pytest.raises(RecipeError) as e:
        load_recipe(write(tmp_path, MINIMAL), overrides)
    assert str(e.value).startswith(expected) and "\n" not in str(e.value)


@pytest.mark.parametrize("overrides", [
    ["warmup.max_steps=1", "warmup.warmup_ratio=0"], ["warmup.max_steps=1", "warmup.lr_scheduler_type=constant"],
    ["warmup.max_steps=2"], ["rlvr.max_steps=1"], ["rlvr.max_steps=-1", "rlvr.warmup_ratio=0.5"],
])
def test_a_schedule_with_a_step_that_trains_is_accepted(tmp_path, overrides):
    load_recipe(write(tmp_path, MINIMAL), overrides)


def test_the_schedule_check_agrees_with_transformers_schedulers():
    """lowres.recipe mirrors transformers' schedules (the recipe check may not import transformers): every
    step's learning-rate factor, for every scheduler, step count and warmup share."""
    import torch
    from transformers import TrainingArguments, get_scheduler

    from lowres.recipe import first_step_that_trains, lr_factor, warmup_steps

    for scheduler in ("linear", "cosine", "constant", "constant_with_warmup"):
        for steps in (1, 2, 3, 7, 20):
            for ratio in (0.0, 0.05, 0.2, 0.5):
                args = TrainingArguments(output_dir="unused", warmup_steps=ratio, report_to=[])
                warmup = warmup_steps(steps, ratio)
                assert warmup == args.get_warmup_steps(steps)
                optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
                theirs = get_scheduler(scheduler, optimizer, num_warmup_steps=warmup, num_training_steps=steps)
                ours = [lr_factor(scheduler, s, steps, warmup) for s in range(steps)]
                assert ours == pytest.approx([theirs.lr_lambdas[0](s) for s in range(steps)])
                moves = any(theirs.lr_lambdas[0](s) > 0 for s in range(steps))
                assert (first_step_that_trains(scheduler, steps, ratio) is not None) == moves


def test_the_schedule_refusal_blames_the_override_that_made_it(tmp_path):
    path = write(tmp_path, MINIMAL + "warmup:\n  max_steps: 1\n  warmup_ratio: 0\n")
    load_recipe(path)
    with pytest.raises(RecipeError, match=r"^--set warmup\.warmup_ratio=0\.05: 1 step with warmup_ratio 0\.05"):
        load_recipe(path, ["warmup.warmup_ratio=0.05"])


@pytest.mark.parametrize("line", [1, 7, 500])
def test_a_byte_that_is_not_utf8_is_reported_on_its_line(tmp_path, line):
    lines = [b"name: t", b"model:", b"  name_or_path: embedded:smollm2-135m"]
    lines += [f"# note {n}".encode() for n in range(4, 601)]
    lines[line - 1] += b"  # caf\xe9 au lait"  # Latin-1, not UTF-8
    path = tmp_path / "r.yaml"
    path.write_bytes(b"\n".join(lines) + b"\n")
    column = len(lines[line - 1].split(b"\xe9")[0]) + 1
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert str(info.value) == f"{path}:{line}:{column}: byte 0xe9 is not UTF-8 text; save the recipe as UTF-8"


def test_the_column_of_a_bad_byte_counts_characters(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_bytes("name: t\ndescription: naïve ".encode() + b"\xff\n")
    with pytest.raises(RecipeError, match=r"r.yaml:2:20: byte 0xff is not UTF-8 text"):
        load_recipe(path)


@pytest.mark.parametrize(("text", "message"), [
    (MINIMAL + "rlvr:\n  learning_rate: 1e-5\n  max_steps: 3\n  learning_rate: 2e-5\n",
     "r.yaml:7: rlvr.learning_rate: duplicate key (first on line 5)"),
    (MINIMAL + "name: u\n", "r.yaml:4: name: duplicate key (first on line 1)"),
    ("name: t\nmodel: {name_or_path: a, name_or_path: b}\n", "r.yaml:2: model.name_or_path: duplicate key"),
    (MINIMAL + "tasks:\n  caps:\n    train: c.jsonl\n    question: q\n    question: question\n    grader: exact\n",
     "r.yaml:8: tasks.caps.question: duplicate key (first on line 7)"),
    (MINIMAL + "eval:\n  limit: {kk: 5, kk: 6}\n", "r.yaml:5: eval.limit.kk: duplicate key"),
], ids=["section", "top-level", "flow-mapping", "task-spec", "limit-mapping"])
def test_a_key_given_twice_is_refused_with_its_line_and_path(tmp_path, text, message):
    with pytest.raises(RecipeError) as info:
        load_recipe(write(tmp_path, text))
    assert str(info.value).startswith(f"{tmp_path}/{message}") and "\n" not in str(info.value)


def test_yaml_merge_keys_may_override_what_they_merge(tmp_path):
    path = write(tmp_path, MINIMAL + "warmup:\n  lora: &lora {r: 8, lora_alpha: 16}\n"
                                     "rlvr:\n  lora:\n    <<: *lora\n    r: 4\n")
    recipe = load_recipe(path)
    assert (recipe.rlvr.lora.r, recipe.rlvr.lora.lora_alpha) == (4, 16)


@pytest.mark.parametrize(("override", "meant"), [
    ("rlvr.lr=1e-5", "learning_rate"),
    ("warmup.bs=4", "per_device_train_batch_size"),
    ("rlvr.batch_size=4", "per_device_train_batch_size"),
    ("warmup.epochs=2", "num_train_epochs"),
    ("warmup.grad_accum=2", "gradient_accumulation_steps"),
    ("rlvr.lora.alpha=32", "lora_alpha"),
    ("rlvr.kl=0.04", "beta"),
    ("model.name=x", "name_or_path"),
    ("rlvr.Learning-Rate=1e-5", "learning_rate"),
    ("rlvr.learnig_rate=1e-5", "learning_rate"),  # a typo still finds its key by spelling
])
def test_an_unknown_key_suggests_the_key_its_alias_means(tmp_path, override, meant):
    with pytest.raises(RecipeError) as info:
        load_recipe(write(tmp_path, MINIMAL), [override])
    assert str(info.value) == f"--set {override}: unknown key; did you mean {meant!r}?"

"""GRPO replays exactly: two runs with the same seed log the same figures at every step, and a run killed
with SIGKILL after a checkpoint, then resumed from it by a fresh trainer, logs the same figures as the run
that was never interrupted.

The tiny GRPO setup of test_grpo_learns.py (tiny_grpo.py: lowres's GRPO trainer class with its fast paths,
bf16 rollouts and loss), on a data set of four prompts, so that the runs cross epochs. "The same figures":
every figure each step logs (reward, loss, grad_norm, entropy, completion lengths, clip ratios, ...) but
its timings, compared exactly, with ==. No tolerance is needed: on a CPU every kernel the loop runs gives the
same bits for the same inputs (with torch.use_deterministic_algorithms(True) nothing in it objects, and the
figures are the same with it; measured with 1 and 2 torch threads, which agreed here too, though a model
large enough for the kernels to split their work by thread count could round differently in another
thread count, or on a CPU with other vector instructions).

What a resumed run needs, beyond the weights, optimizer and schedule, and where it comes from:
- the global torch RNG, which the sampler (lowres.decode.sample_batch), TRL's shuffle of a round's rows and
  the LoRA dropout draw from: transformers saves it with each checkpoint (rng_state.pth) and restores it;
- the data order: TRL's RepeatSampler drew each epoch's permutation from a generator seeded once, so a
  trainer resuming in epoch e replayed epoch 0's prompts. lowres's trainer makes each epoch's order a
  function of the seed and the epoch (`epoch_seeded`), the same order as TRL's uninterrupted run;
- TRL's round of completions: with num_iterations > 1 one round serves several steps, and TRL keeps
  neither the round nor its step counter in a checkpoint, so a run resumed mid-round sampled a new round
  from the updated policy. lowres's trainer saves the round with a checkpoint taken mid-round
  (`save_generation_buffer`) and restores it.
The two `*_is_what_makes_it_exact` tests take each fix out again and see the resumed run part from the
uninterrupted one: the setup does exercise them.

The killed run is a real one: a subprocess trains, saves checkpoint K, trains one step more and sends
itself SIGKILL (most of its ~10 s is importing torch and TRL); it is resumed in this process.
"""

import os
import signal
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
import torch
from tiny_grpo import PROMPTS, target_share, tiny_model, tiny_setup, tiny_tokenizer

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")

SEED = 0
# 2 prompts of 8 completions a round over 4 prompts: 2 rounds an epoch. With num_iterations 2 each round
# serves 2 steps, so an epoch is 4 steps, and checkpoint 5 falls in the second epoch, in the middle of a
# round (steps 5 and 6 share one): the resumed run needs the round, the data order and the RNG state.
CONFIGS = {
    "a round a step": {"lora": {"lora_dropout": 0.1}},
    "a round every 2 steps": {"num_iterations": 2, "lora": {"lora_dropout": 0.1}},
}
STEPS, CHECKPOINT = 8, 5
TIMINGS = ("step_time", "timing/")


def figures(log_history) -> dict[int, dict]:
    """Each step's logged figures but its timings, by step."""
    return {entry["step"]: {k: v for k, v in entry.items() if not k.startswith(TIMINGS)}
            for entry in log_history if "loss" in entry}


def train(out_dir, config: str, seed: int = SEED, resume: str | None = None, callbacks=()) -> dict[int, dict]:
    """GRPO for STEPS steps of the tiny model, saving every CHECKPOINT steps; the figures by step (those
    of the checkpoint's steps included, for a resumed run)."""
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback

    from lowres.train.backend import lora_config
    from lowres.train.rlvr import lowres_grpo_trainer

    recipe, cpu, args = tiny_setup(Path(out_dir), STEPS, seed, save_steps=CHECKPOINT, **CONFIGS[config])
    trainer = lowres_grpo_trainer(recipe, cpu)(
        model=tiny_model(seed, lora_config(recipe.rlvr.lora)), reward_funcs=[target_share], args=args,
        processing_class=tiny_tokenizer(), train_dataset=Dataset.from_list([{"prompt": p} for p in PROMPTS]),
        callbacks=list(callbacks))
    trainer.remove_callback(PrinterCallback)  # a dict per step on stdout
    trainer.train(resume_from_checkpoint=resume)
    return figures(trainer.state.log_history)


# The killed run: trains, saves checkpoint CHECKPOINT, trains one more step (lost: it is never saved),
# then SIGKILL.
KILLED = """
import os, signal, sys
sys.path.insert(0, {folder!r})
import torch
torch.set_num_threads(1)
from transformers import TrainerCallback
from test_grpo_replay import CHECKPOINT, train

class Kill(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == CHECKPOINT + 1:
            os.kill(os.getpid(), signal.SIGKILL)

train({out!r}, {config!r}, callbacks=[Kill()])
"""


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory):
    """The subprocess of the killed run (see KILLED) on "a round every 2 steps", started before the runs in
    this process so that its imports overlap them; and its output folder."""
    out = tmp_path_factory.mktemp("killed")
    code = KILLED.format(folder=str(Path(__file__).parent), out=str(out), config="a round every 2 steps")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    yield proc, out
    if proc.poll() is None:  # a test left before waiting for it
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def killed(killed_run):
    """The checkpoint that the killed run left."""
    proc, out = killed_run
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL, stderr[-3000:]
    checkpoints = sorted(p.name for p in (out / "checkpoints").glob("checkpoint-*"))
    assert checkpoints == [f"checkpoint-{CHECKPOINT}"], checkpoints  # the step after it was lost
    return out / "checkpoints" / f"checkpoint-{CHECKPOINT}"


@pytest.fixture(scope="module")
def run(tmp_path_factory, killed_run):
    """run(config, seed=SEED) -> the figures of an uninterrupted run, each trained once."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the killed run, and several times faster on a model this small
    done = {}

    def run_once(config, seed=SEED):
        if (config, seed) not in done:
            done[config, seed] = train(tmp_path_factory.mktemp("grpo"), config, seed)
        return done[config, seed]

    yield run_once
    torch.set_num_threads(threads)


def parting_steps(a: dict, b: dict) -> list[int]:
    return [step for step in sorted(set(a) | set(b)) if a.get(step) != b.get(step)]


@pytest.mark.parametrize("config", CONFIGS)
def test_same_seed_runs_log_the_same_figures(run, tmp_path, config):
    first = run(config)
    assert sorted(first) == list(range(1, STEPS + 1))
    assert all("reward" in first[step] for step in (1, 3, 5, 7))  # a new round: its reward is logged
    assert parting_steps(first, train(tmp_path, config)) == []
    # The comparison has power: another seed parts at once.
    assert parting_steps(first, run(config, seed=SEED + 1))[:1] == [1]


def test_a_killed_run_resumes_exactly(run, killed, tmp_path):
    config = "a round every 2 steps"
    # The checkpoint falls mid-round: it carries the round (and, in rng_state.pth, the RNG state).
    assert (killed / "lowres-grpo-buffer.pt").is_file() and (killed / "rng_state.pth").is_file()
    resumed = train(tmp_path, config, resume=str(killed))
    # Steps 1-5 come from the killed run (the checkpoint's log), 6-8 from the resumed one.
    assert sorted(resumed) == list(range(1, STEPS + 1))
    assert parting_steps(run(config), resumed) == []


def test_a_run_stopped_at_a_round_boundary_resumes_exactly(run, tmp_path):
    """One round a step (the default): every checkpoint falls between rounds, and nothing but the RNG
    state and the data order carries over. Stopped in this process right after the checkpoint: the
    resumed trainer is a fresh one that reads only the checkpoint folder, as after a kill."""
    from transformers import TrainerCallback

    config = "a round a step"

    class Stop(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            control.should_training_stop = True

    train(tmp_path / "stopped", config, callbacks=[Stop()])
    checkpoint = tmp_path / "stopped" / "checkpoints" / f"checkpoint-{CHECKPOINT}"
    assert not (checkpoint / "lowres-grpo-buffer.pt").exists()  # between rounds: nothing to carry
    resumed = train(tmp_path / "resumed", config, resume=str(checkpoint))
    assert parting_steps(run(config), resumed) == []


def test_the_epoch_seeded_data_order_is_what_makes_it_exact(run, killed, tmp_path):
    from lowres.train import rlvr

    with mock.patch.object(rlvr, "epoch_seeded", lambda sampler: sampler):  # TRL's own data order
        resumed = train(tmp_path, "a round every 2 steps", resume=str(killed))
    # The reused round (step 6) is still right; the next round, from epoch 0's prompts, is not.
    assert parting_steps(run("a round every 2 steps"), resumed)[:1] == [CHECKPOINT + 2]


def test_the_saved_round_is_what_makes_it_exact(run, killed, tmp_path):
    from lowres.train import rlvr

    with mock.patch.object(rlvr, "load_generation_buffer", lambda trainer, checkpoint: None):  # TRL's resume
        resumed = train(tmp_path, "a round every 2 steps", resume=str(killed))
    assert parting_steps(run("a round every 2 steps"), resumed)[:1] == [CHECKPOINT + 1]

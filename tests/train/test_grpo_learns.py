"""GRPO learns: a sanity check of the whole training loop that cannot pass by accident.

A tiny randomly initialised Llama (one layer, hidden 64, a 32-word vocabulary; tiny_grpo.py, shared with
test_grpo_replay.py) with lowres's default LoRA adapter is trained by GRPO for a fixed number of steps on
four short prompts. The reward is the share of the completion's slots (max_completion_length of them) filled
with one chosen word: a random model writes it about 1 time in 32, and nothing but the reward can teach it
to write it everywhere.

- `test_the_true_reward_is_learned`: the share rises from near chance to >= 0.9, both (a) with lowres's
  fast paths on — its GRPO trainer class as `lowres_grpo_trainer` builds it for a CPU from a recipe (lean
  sampling loop, LoRA folded into bf16 weights for the rollouts, each group's shared prompt run once in
  the loss, zero-advantage rows and zero-variance groups left out of the loss, the loss autocast to
  bf16) and the GRPOConfig `grpo_config` makes — and (b) with all of them off: plain `trl.GRPOTrainer`
  (`model.generate`, fp32, TRL's own loss) on the same config, seed, model, prompts and reward.
- `test_the_fast_paths_learn_as_fast_as_plain_trl`: the two reward curves agree (the step at which each
  first reaches a mean reward of 0.5), so a fast path that slows or stalls learning is seen even when
  it still gets there in the end.
- `test_a_coin_flip_reward_teaches_nothing`: lowres's spurious-reward control (`CoinFlipReward`: 1 or 0
  by a seeded hash of prompt and completion) on the same setup leaves the share near chance: the rise
  above comes from the reward, not from something else in the loop (the optimizer, the schedule,
  sampling drift).
- `test_int8_rollouts_with_the_importance_correction_learn_as_bf16_rollouts_do`: arm (a) with
  `rlvr.rollout_dtype: int8` (completions from int8 copies of the linear layers, the loss weighted by the
  truncated importance ratio of the trained model to the sampler) passes the same checks, and logs the ratio.
- `test_a_flipped_advantage_sign_unlearns_the_reward`: the same run with the advantages' sign flipped
  (a planted bug) must fail the learning check; the share falls instead. Checked in CI, so the learning
  check keeps the power to catch a sign error anywhere between the advantages and the update.

The only lowres piece both arms share is the pure-PyTorch stand-in for TRL's Triton log-prob kernel
(`ensure_logprob_kernel`), without which TRL cannot compute a loss on a CPU at all.
Each run takes 1-3 s; torch runs on one thread here, which is several times faster than two on a model
this small (and keeps the timing steady on a shared 2-core machine).
"""

import pytest
import torch
from tiny_grpo import CHANCE, PROMPTS, target_share, tiny_model, tiny_setup, tiny_tokenizer

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")

STEPS = 30
SEED = 0

# Thresholds, measured over seeds 0-19 (100 runs; the CI runs seed 0, whose numbers are in brackets):
# - near chance at the start: the first step's completions (sampled before any update) had a target share
#   of 0.00-0.08 (0.01), chance being 1/32 = 0.03.
# - learned: with the true reward every run of either arm averaged >= 0.98 over its last 5 steps (1.00),
#   so LEARNED = 0.9 leaves room for a platform whose float rounding sends a run down another path.
LEARNED = 0.9
# - the two arms agree: the step at which a run's share first reaches 0.5 spread over steps 5-13 (lowres,
#   mean 7.2) and 4-10 (plain TRL, mean 6.8) from seed to seed; the same seed's two arms, whose samplers
#   draw different random numbers and so part after the first step, differed by -3 to +3 steps (standard
#   deviation 1.7; seed 0: 10 against 9). 5 steps is about 3 standard deviations: a float-rounding change
#   (in effect another seed) does not fail it, while a fast path that delays learning by more than 5
#   steps, or stalls it, does.
CROSSING_TOLERANCE = 5
# - a coin flip or a flipped advantage: the share averaged <= 0.15 over the last 5 steps with the coin
#   (0.00) and <= 0.002 with the advantage flipped (0.00); it never reached 0.5 in either (the true
#   reward reached 0.5 by step 13 in all 40 runs).
UNLEARNED = 0.25


def with_flipped_advantages(trainer_class):
    """The planted bug: every advantage's sign flipped after TRL computes them, before the loss sees them."""

    class Flipped(trainer_class):
        def _generate_and_score_completions(self, inputs):
            out = super()._generate_and_score_completions(inputs)
            out["advantages"] = -out["advantages"]
            return out

    return Flipped


class FastPathSpy:
    """Counts lowres's fast paths as they run, so arm (a) shows that it took them rather than assuming it."""

    def __init__(self):
        from lowres import decode
        from lowres.train import rlvr

        self.rollout_dtypes, self.shared_forwards, self.row_subsets, self.loss_dtypes = [], 0, 0, set()
        self.patches = [(decode, "sample_batch", self._sample(decode.sample_batch)),
                        (rlvr, "shared_prompt_logps", self._shared(rlvr.shared_prompt_logps)),
                        (rlvr, "select_rows", self._select(rlvr.select_rows))]

    def _sample(self, sample_batch):
        def spy(*args, rollout_dtype=None, **kwargs):
            self.rollout_dtypes.append(rollout_dtype)
            return sample_batch(*args, rollout_dtype=rollout_dtype, **kwargs)
        return spy

    def _shared(self, shared_prompt_logps):
        def spy(*args, **kwargs):
            out = shared_prompt_logps(*args, **kwargs)
            self.shared_forwards += out is not None
            self.loss_dtypes.add(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
            return out
        return spy

    def _select(self, select_rows):
        def spy(inputs, live):
            self.row_subsets += 1
            return select_rows(inputs, live)
        return spy

    def __enter__(self):
        import contextlib
        from unittest import mock

        self.stack = contextlib.ExitStack()
        for module, name, spy in self.patches:
            self.stack.enter_context(mock.patch.object(module, name, spy))
        return self

    def __exit__(self, *exc):
        self.stack.close()


def train(arm: str, out_dir, reward: str = "target", flip_advantages: bool = False, seed: int = SEED):
    """GRPO for STEPS steps: per step, the mean target_share and the mean reward that taught; and the spy."""
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback
    from trl import GRPOTrainer

    from lowres.rewards import CoinFlipReward
    from lowres.train.backend import lora_config
    from lowres.train.rlvr import lowres_grpo_trainer

    # lr 1e-2, 16 rows of 8 completions of COMPLETION_LENGTH tokens, bf16 rollouts and loss (tiny_grpo.py)
    rollouts = {"rollout_dtype": "int8"} if arm == "lowres-int8" else {}
    recipe, cpu, args = tiny_setup(out_dir, STEPS, seed, name="grpo-learns", **rollouts)
    reward_funcs = [target_share]
    if reward == "coin flip":  # target_share rides along with weight 0: logged, teaching nothing
        reward_funcs, args.reward_weights = [CoinFlipReward(seed), target_share], [1.0, 0.0]
    with FastPathSpy() as spy:
        trainer_class = GRPOTrainer if arm == "trl" else lowres_grpo_trainer(recipe, cpu)
        if flip_advantages:
            trainer_class = with_flipped_advantages(trainer_class)
        trainer = trainer_class(model=tiny_model(seed, lora_config(recipe.rlvr.lora)), reward_funcs=reward_funcs,
                                args=args, processing_class=tiny_tokenizer(),
                                train_dataset=Dataset.from_list([{"prompt": p} for p in PROMPTS] * STEPS))
        trainer.remove_callback(PrinterCallback)  # a dict per step on stdout
        trainer.train()
    logs = [entry for entry in trainer.state.log_history if "rewards/target_share/mean" in entry]
    assert len(logs) == STEPS
    assert sum(getattr(f, "errors", 0) for f in reward_funcs) == 0
    return [e["rewards/target_share/mean"] for e in logs], [e["reward"] for e in logs], spy, logs


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """run(arm, **train_kwargs) -> train(...)'s (shares, rewards, spy), each configuration trained once."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    done = {}

    def run_once(arm, **kwargs):
        key = (arm, *sorted(kwargs.items()))
        if key not in done:
            done[key] = train(arm, tmp_path_factory.mktemp("grpo"), **kwargs)
        return done[key]

    yield run_once
    torch.set_num_threads(threads)


def learned(shares) -> bool:
    """The learning check: from near chance at the first step to >= LEARNED over the last 5 steps."""
    return shares[0] < 0.1 and sum(shares[-5:]) / 5 >= LEARNED


def first_step_reaching(shares, level: float) -> int:
    return next((step for step, share in enumerate(shares, 1) if share >= level), len(shares) + 1)


@pytest.mark.parametrize("arm", ["lowres", "trl"])
def test_the_true_reward_is_learned(run, arm):
    shares, _, spy, _ = run(arm)
    assert learned(shares), [round(s, 2) for s in shares]
    if arm == "trl":  # plain TRL: none of lowres's paths
        assert (spy.rollout_dtypes, spy.shared_forwards, spy.row_subsets, spy.loss_dtypes) == ([], 0, 0, set())
        return
    # lowres's sampling loop made every step's completions, from bf16 weights; its loss ran autocast to bf16,
    # with shared prompts run once (in every step where two rows of a group teach: about half of them; once
    # learned, every group scores 8/8 and teaches nothing), and left out rows that teach nothing.
    assert spy.rollout_dtypes == [torch.bfloat16] * STEPS
    assert spy.loss_dtypes == {torch.bfloat16}
    assert spy.shared_forwards >= 3  # 6-18 steps over seeds 0-19
    assert spy.row_subsets >= 1


def test_the_fast_paths_learn_as_fast_as_plain_trl(run):
    lowres, trl = run("lowres")[0], run("trl")[0]
    assert abs(first_step_reaching(lowres, 0.5) - first_step_reaching(trl, 0.5)) <= CROSSING_TOLERANCE, \
        ([round(s, 2) for s in lowres], [round(s, 2) for s in trl])


def test_a_coin_flip_reward_teaches_nothing(run):
    shares, rewards, _, _ = run("lowres", reward="coin flip")
    # The control paid about half of the completions while they were diverse: 0.41-0.74 over the first 10
    # steps for seeds 0-19 (0.41). Not later: a coin flip is a fixed function of the prompt and text, so a
    # policy that collapses onto a few completions can learn which of them pay (seed 9 reached 0.86).
    assert 0.2 < sum(rewards[:10]) / 10 < 0.8
    assert not learned(shares)
    assert sum(shares[-5:]) / 5 < UNLEARNED and max(shares) < 0.5, [round(s, 2) for s in shares]


@pytest.mark.parametrize("arm", ["lowres", "trl"])
def test_a_flipped_advantage_sign_unlearns_the_reward(run, arm):
    shares, _, _, _ = run(arm, flip_advantages=True)
    assert not learned(shares)
    assert max(shares) < 0.5 and sum(shares[-5:]) / 5 < CHANCE, [round(s, 2) for s in shares]  # pushed down


def test_int8_rollouts_with_the_importance_correction_learn_as_bf16_rollouts_do(run):
    """rlvr.rollout_dtype int8: completions from int8 weight-only copies of the linear layers, each token's
    advantage weighted by min(π_train / π_sampler, 2); the same learning check, and the ratio logged."""
    shares, _, spy, logs = run("lowres-int8")
    assert learned(shares), [round(s, 2) for s in shares]
    assert spy.rollout_dtypes == [torch.int8] * STEPS
    assert abs(first_step_reaching(shares, 0.5) - first_step_reaching(run("lowres")[0], 0.5)) <= CROSSING_TOLERANCE
    # Logged for every step in which some row taught (once learned, every group scores the same).
    ratios = [e for e in logs if "rollout/importance_ratio_mean" in e]
    assert len(ratios) >= 5
    for e in ratios:
        # Once a step's tokens are near certain, both policies give them ~1 and the largest ratio sits just
        # below 1 (0.99998 seen): the ratio is a weight near 1, not a one-sided drift.
        assert 0.5 < e["rollout/importance_ratio_mean"] < 2
        assert e["rollout/importance_ratio_max"] >= max(e["rollout/importance_ratio_mean"], 0.99)
        assert 0 <= e["rollout/importance_capped_share"] < 0.5

"""A training stage whose learning-rate schedule gives every step learning rate 0 stops before training."""

import pytest
import torch
from transformers import TrainerControl, TrainerState, TrainingArguments, get_scheduler

from lowres.errors import UserError
from lowres.train.callbacks import ScheduleGuard


def begin(scheduler: str, steps: int, ratio: float) -> None:
    """ScheduleGuard.on_train_begin as the Trainer calls it, with the scheduler the Trainer would build."""
    args = TrainingArguments(output_dir="unused", warmup_steps=ratio, lr_scheduler_type=scheduler, report_to=[])
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    lr_scheduler = get_scheduler(scheduler, optimizer, num_warmup_steps=args.get_warmup_steps(steps),
                                 num_training_steps=steps)
    state = TrainerState()
    state.max_steps = steps
    ScheduleGuard("warmup").on_train_begin(args, state, TrainerControl(), lr_scheduler=lr_scheduler)


def test_one_step_of_warmup_from_zero_is_refused_in_one_line():
    with pytest.raises(UserError) as e:
        begin("cosine", 1, 0.05)
    assert str(e.value) == (
        "warmup: each of its 1 optimizer step (num_train_epochs 3 over the data) has learning rate 0 — the cosine "
        "schedule warms up from 0 over 1 step — so the weights would never move; set warmup.warmup_ratio: 0, or more "
        "steps (warmup.num_train_epochs, more data, or a smaller warmup.gradient_accumulation_steps)")


@pytest.mark.parametrize("scheduler, steps, ratio", [("cosine", 2, 0.05), ("cosine", 1, 0.0), ("constant", 1, 0.5),
                                                     ("linear", 23, 0.05)])
def test_a_schedule_with_a_step_that_trains_goes_ahead(scheduler, steps, ratio):
    begin(scheduler, steps, ratio)

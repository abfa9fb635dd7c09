"""What survives a crash: atomic files and folders, torn logs, checkpoints that are complete and made
by the same run, a full disk, out of GPU memory (simulated on the CPU)."""

import json
import os

import pytest
import torch

from lowres import artifacts
from lowres.errors import OutOfMemory, UserError
from lowres.train import resume
from lowres.train.common import oom_guard


def test_an_atomic_write_that_dies_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "results.json"
    artifacts.write_json(target, {"accuracy": 0.5})

    def crash(src, dst):
        raise KeyboardInterrupt  # dies between writing the temp file and the rename

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        artifacts.write_json(target, {"accuracy": 0.9})
    monkeypatch.undo()
    assert json.loads(target.read_text()) == {"accuracy": 0.5}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_a_folder_appears_whole_or_not_at_all(tmp_path):
    adapter = tmp_path / "adapter"
    with artifacts.building_folder(adapter) as tmp:
        (tmp / "weights").write_text("v1")
    with pytest.raises(RuntimeError):
        with artifacts.building_folder(adapter) as tmp:
            (tmp / "weights").write_text("v2, half")
            raise RuntimeError("killed mid-save")
    assert (adapter / "weights").read_text() == "v1"  # the old folder is untouched
    with artifacts.building_folder(adapter) as tmp:  # the leftover .partial is cleared
        (tmp / "weights").write_text("v3")
    assert (adapter / "weights").read_text() == "v3"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]


def test_a_torn_last_log_line_is_skipped(tmp_path):
    log = tmp_path / "metrics.jsonl"
    artifacts.append_jsonl(log, {"step": 1, "loss": 2.0})
    with log.open("a") as f:
        f.write('{"step": 2, "lo')  # the process died mid-line
    assert artifacts.read_jsonl(log) == [{"step": 1, "loss": 2.0}]


def make_checkpoint(folder, step, *, torn=None):
    """A checkpoint folder as transformers writes it, small."""
    from safetensors.torch import save_file

    ckpt = folder / f"checkpoint-{step}"
    ckpt.mkdir(parents=True)
    save_file({"lora_A": torch.zeros(4, 4)}, ckpt / "adapter_model.safetensors")
    torch.save({"state": {}}, ckpt / "optimizer.pt")
    torch.save({"last_epoch": step}, ckpt / "scheduler.pt")
    (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    if torn:
        data = (ckpt / torn).read_bytes()
        (ckpt / torn).write_bytes(data[:-8])  # the last bytes never reached the disk
    return ckpt


def write_metrics(stage_dir, steps):
    for step in steps:
        artifacts.append_jsonl(stage_dir / "metrics.jsonl", {"stage": "warmup", "step": step, "loss": 1.0 / step})


def test_an_interruption_says_whether_it_left_a_checkpoint_to_resume(tmp_path):
    stage = tmp_path / "rlvr"
    before = ("interrupted during rlvr before it saved a checkpoint: the same command starts rlvr over (save_steps "
              "sets how often it saves)")
    assert resume.interrupted_message("rlvr", stage) == before  # stopped while loading: no folder yet
    resume.prepare_resume(stage, "rlvr", "fp1")  # as the stage's start marks checkpoints/
    assert resume.interrupted_message("rlvr", stage) == before
    make_checkpoint(stage / "checkpoints", 2)
    make_checkpoint(stage / "checkpoints", 4, torn="optimizer.pt")  # the save that Ctrl-C cut short
    assert resume.interrupted_message("rlvr", stage) == ("interrupted during rlvr; its last checkpoint (checkpoint-2) "
                                                         "is kept: run the same command again to resume from it")
    assert resume.prepare_resume(stage, "rlvr", "fp1").endswith("checkpoint-2")  # what the rerun does
    resume.mark_finished(stage)  # a finished run's checkpoints are set aside, not resumed
    assert resume.interrupted_message("rlvr", stage) == before
    assert resume.interrupted_message("eval", None) == ("interrupted during eval: run the same command again; the "
                                                        "stages that finished are skipped")


def test_resume_takes_the_newest_complete_checkpoint_of_the_same_run(tmp_path, capsys):
    stage = tmp_path / "warmup"
    resume.prepare_resume(stage, "warmup", "fp1")  # a fresh stage: marked, nothing to resume
    for step in (1, 2):
        make_checkpoint(stage / "checkpoints", step)
    make_checkpoint(stage / "checkpoints", 3, torn="adapter_model.safetensors")
    write_metrics(stage, [1, 2, 3])
    assert resume.prepare_resume(stage, "warmup", "fp1") == str(stage / "checkpoints" / "checkpoint-2")
    out = capsys.readouterr().out
    assert "checkpoint-3 is incomplete (adapter_model.safetensors is cut short" in out
    assert (stage / "set-aside" / "checkpoint-3-incomplete").is_dir()
    # Steps after the resumed checkpoint will be redone: their log lines go.
    assert [r["step"] for r in artifacts.read_jsonl(stage / "metrics.jsonl")] == [1, 2]


@pytest.mark.parametrize("torn", ["optimizer.pt", "trainer_state.json"])
def test_other_torn_files_are_caught_too(tmp_path, torn):
    ckpt = make_checkpoint(tmp_path, 5, torn=torn)
    assert resume.checkpoint_problem(ckpt) is not None
    assert resume.checkpoint_problem(make_checkpoint(tmp_path, 6)) is None


def test_checkpoints_of_other_settings_are_set_aside_not_resumed(tmp_path, capsys):
    stage = tmp_path / "rlvr"
    resume.prepare_resume(stage, "rlvr", "old")
    make_checkpoint(stage / "checkpoints", 4)
    write_metrics(stage, [1, 2, 3, 4])
    assert resume.prepare_resume(stage, "rlvr", "new") is None
    out = " ".join(capsys.readouterr().out.split())
    assert "rlvr: 1 checkpoint were made with other settings or inputs (fingerprint old, now new)" in out
    assert "starting fresh" in out
    assert (stage / "set-aside" / "checkpoints" / "checkpoint-4").is_dir()
    assert not (stage / "metrics.jsonl").exists()  # the old run's curve is not mixed into the new one


def test_a_finished_runs_last_checkpoint_is_not_an_interrupted_one(tmp_path, capsys):
    stage = tmp_path / "warmup"
    resume.prepare_resume(stage, "warmup", "fp")
    make_checkpoint(stage / "checkpoints", 12)
    (stage / "adapter").mkdir()
    resume.mark_finished(stage)
    assert resume.finished_before(stage, "fp", stage / "adapter")
    assert not resume.finished_before(stage, "other", stage / "adapter")
    # Forced to train again with the same settings: the final checkpoint is not resumed with 0 steps left.
    assert resume.prepare_resume(stage, "warmup", "fp") is None
    assert "belong to a run that finished" in capsys.readouterr().out


def test_checkpoints_without_a_mark_are_not_trusted(tmp_path, capsys):
    stage = tmp_path / "warmup"
    make_checkpoint(stage / "checkpoints", 2)
    assert resume.prepare_resume(stage, "warmup", "fp") is None
    assert "carry no record of the settings" in capsys.readouterr().out


@pytest.mark.parametrize("error", [
    OSError(28, "No space left on device"),
    RuntimeError("[enforce fail at inline_container.cc:626] . PytorchStreamWriter failed writing file data/0: "
                 "file write failed"),
])
def test_a_full_disk_is_one_line_naming_the_folder(tmp_path, error):
    with pytest.raises(UserError) as caught:
        with artifacts.disk_guard(tmp_path / "checkpoints", "warmup"):
            raise error
    message = str(caught.value)
    assert message.startswith(f"warmup: the disk is full while writing to {tmp_path / 'checkpoints'}")
    assert "\n" not in message and "last complete checkpoint is kept" in message


def test_free_space_is_checked_before_a_stage(tmp_path):
    artifacts.require_free_space(tmp_path, 1, "the merge stage")
    with pytest.raises(UserError, match=r"GiB free, but the merge stage needs about .* set output.dir"):
        artifacts.require_free_space(tmp_path, 2**62, "the merge stage")


def test_out_of_gpu_memory_names_the_stage_and_every_setting_that_lowers_it():
    settings = {"rlvr.per_device_train_batch_size": 8, "rlvr.num_generations": 8,
                "rlvr.max_completion_length": 1024, "rlvr.load_in_4bit": False}
    with pytest.raises(OutOfMemory) as caught:
        with oom_guard("rlvr", settings, gradient_checkpointing=True):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    assert str(caught.value) == (
        "rlvr: out of GPU memory; lower rlvr.per_device_train_batch_size (8), rlvr.num_generations (8) or "
        "rlvr.max_completion_length (1024), or set rlvr.load_in_4bit: true (gradient checkpointing is on)")
    assert caught.value.exit_code == 3
    with pytest.raises(ValueError):  # anything else passes through untouched
        with oom_guard("rlvr", settings):
            raise ValueError("not memory")


@pytest.mark.parametrize("make_bad", ["folder", "under_a_file"])
def test_output_files_give_one_line_for_a_bad_place(tmp_path, make_bad):
    if make_bad == "folder":
        path = tmp_path / "out.jsonl"
        path.mkdir()
        expected = f"{path}: is a folder; give a file name"
    else:
        (tmp_path / "afile").write_text("x")
        path = tmp_path / "afile" / "out.jsonl"
        expected = f"{path}: {tmp_path / 'afile'} is a file, not a folder"
    with pytest.raises(UserError) as caught:
        artifacts.output_file(path)
    assert str(caught.value).startswith(expected)

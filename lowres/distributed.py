"""A training stage on several processes: plain DDP, launched by Hugging Face Accelerate.

`lowres run/warmup/rlvr --num-processes N` (recipe key `num_processes`) runs the warmup and RLVR stages
as N processes under `accelerate launch`: one model copy per process, each on its own GPU (on a CPU,
each on its share of the cores, gloo backend). TRL's trainers speak Accelerate already, so the work is
theirs: the data is sharded across the processes, gradients are averaged, and the global batch is
per_device_train_batch_size × gradient_accumulation_steps × N. Merge and evaluation run once, as one
process. `accelerate launch -m lowres warmup RECIPE` by hand works too.

What lowres adds: only the main process writes (adapter, checkpoint marks, metrics.jsonl, the live
view); the backend is transformers+PEFT (Unsloth's kernels are single-GPU in lowres); and a stage
that fails on any process ends with that process's one-line error and exit code, not the launcher's
traceback: `lowres` runs `python -m lowres.distributed N ARGS…`, which is `accelerate launch` in one
process that turns the first failed process's exit into the stage's exit code.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from pathlib import Path

from lowres.errors import INTERRUPTED

# Where each process of a launch leaves its one-line error (bad input, out of memory) for the launcher
# to print once, instead of every process printing it.
ERRORS_DIR_ENV = "LOWRES_RANK_ERRORS"


def process_count() -> int:
    """Processes in this launch (1 outside one)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def process_rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main_process() -> bool:
    return process_rank() == 0


def in_launch() -> bool:
    """Whether this process is one of several started by a launcher (accelerate launch, torchrun)."""
    return process_count() > 1


def record_error(message: str, exit_code: int) -> bool:
    """In a launch by `lowres`: leave this process's one-line error for the launcher (True); else False
    (the caller prints it)."""
    folder = os.environ.get(ERRORS_DIR_ENV)
    if not folder or not in_launch():
        return False
    path = Path(folder) / f"rank{process_rank()}.txt"
    try:
        path.write_text(f"{exit_code}\n{message}\n", encoding="utf-8")
    except OSError:
        return False
    return True


def _free_port() -> int:
    """A TCP port nothing listens on now, for the processes' rendezvous (two runs on one machine must
    not both take accelerate's default 29500)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launcher_command(num_processes: int, args: list[str]) -> list[str]:
    """The command that runs `lowres ARGS` as `num_processes` processes."""
    return [sys.executable, "-m", "lowres.distributed", str(num_processes), *args]


def accelerate_arguments(num_processes: int, args: list[str], cpu: bool, cores: int) -> list[str]:
    """`accelerate launch` arguments for plain DDP on this machine, every setting given (so it asks no
    config file and warns about no default). On a CPU each process gets its share of the cores."""
    launch = ["--multi_gpu", "--num_processes", str(num_processes), "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port())]
    if cpu:
        launch += ["--num_cpu_threads_per_process", str(max(1, cores // num_processes))]
    return [*launch, "-m", "lowres", *args]


def launch(num_processes: int, args: list[str]) -> int:
    """Run `lowres ARGS` as `num_processes` processes with accelerate launch; the exit code to end with."""
    import logging
    import tempfile

    import torch
    import torch.distributed.run  # noqa: F401  (creates the launcher's loggers, quieted below)
    from accelerate.commands.launch import launch_command, launch_command_parser
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    from lowres.ui import error

    # The launcher's own log lines (a process failed, the others are being stopped) and its traceback
    # say nothing the process's message does not. (Each of its loggers has its own level.)
    for name in [n for n in logging.Logger.manager.loggerDict if n.startswith("torch.distributed")]:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    cpu = not torch.cuda.is_available()
    if not cpu and torch.cuda.device_count() < num_processes:
        error(f"--num-processes {num_processes}: this machine has {torch.cuda.device_count()} GPU(s); "
              "run at most one process per GPU")
        return 2
    parsed = launch_command_parser().parse_args(accelerate_arguments(num_processes, args, cpu, os.cpu_count() or 1))
    with tempfile.TemporaryDirectory(prefix="lowres-ranks-") as errors_dir:
        os.environ[ERRORS_DIR_ENV] = errors_dir
        try:
            launch_command(parsed)
            return 0
        except ChildFailedError as e:
            rank, failure = e.get_first_failure()
            code = failure.exitcode
            recorded = Path(errors_dir) / f"rank{rank}.txt"
            if recorded.is_file():
                first, _, message = recorded.read_text(encoding="utf-8").partition("\n")
                error(message.strip())
                return int(first)
            if code < 0:  # killed by a signal: SIGINT is an interruption, the rest a crash
                return INTERRUPTED if -code == signal.SIGINT else 1
            return code
        except (KeyboardInterrupt, SignalException):  # Ctrl-C: the launcher passed it on to the processes
            return INTERRUPTED


def main() -> None:
    if len(sys.argv) < 3 or not sys.argv[1].isdigit():
        print("usage: python -m lowres.distributed NUM_PROCESSES LOWRES_ARGS...", file=sys.stderr)
        sys.exit(2)
    sys.exit(launch(int(sys.argv[1]), sys.argv[2:]))


if __name__ == "__main__":
    main()

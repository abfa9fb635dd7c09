"""Teacher distillation: keep-policies, dedupe, the token filter and resume (stub teacher), and the real
HF path with the embedded model on 2 puzzles."""

import json

import pytest

from lowres.distill import HFTeacher, SamplingSettings, TeacherSample, distill
from lowres.errors import UserError
from lowres.tasks import get_task
from lowres.tasks.kk import generate_puzzles
from lowres.tasks.kk.task import puzzle_row


class CannedTeacher:
    """A test double for the teacher only: per puzzle, one right answer, one wrong, one unformatted,
    and a repeat of the right one."""

    name = "canned"

    def __init__(self):
        self.calls = 0

    def sample(self, prompts, settings):
        self.calls += len(prompts)
        out = []
        for messages in prompts:
            names = _names_in(messages[-1]["content"])
            right = "\n".join(f"({i + 1}) {n} is a knight" for i, n in enumerate(names))
            wrong = "\n".join(f"({i + 1}) {n} is a knave" for i, n in enumerate(names))
            out.append([TeacherSample(f"<think>ok</think> <answer>{right}</answer>", 12),
                        TeacherSample(f"<think>hmm</think><answer>{wrong}</answer>", 300),
                        TeacherSample("I am not sure.", 5),
                        TeacherSample(f"<think>ok</think>\n\n<answer>{right}</answer>", 12)][:settings.k])
        return out


def _names_in(question):
    start = question.index("inhabitants: ") + len("inhabitants: ")
    listed = question[start:question.index(".", start)]
    return [n.strip() for n in listed.replace(" and ", ", ").split(",") if n.strip()]


@pytest.fixture
def rows():
    # All-knight puzzles make the canned "right" answer right: pick those.
    puzzles = [p for p in generate_puzzles(200, n_people=3, seed=1) if all(p.solution)][:3]
    assert len(puzzles) == 3
    return [puzzle_row(p) for p in puzzles]


def read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize(("keep", "expected"), [("all", 3), ("formatted", 2), ("correct", 1)])
def test_keep_policies_and_dedupe(tmp_path, rows, keep, expected):
    out = tmp_path / "traces.jsonl"
    stats = distill(rows, get_task("kk"), CannedTeacher(), out, settings=SamplingSettings(k=4), keep=keep)
    kept = read(out)
    assert len(kept) == expected * len(rows)
    assert stats.sampled == 4 * len(rows) and stats.duplicates == len(rows)
    assert {"prompt", "completion", "puzzle_id", "correct", "n_tokens"} <= set(kept[0])
    if keep == "correct":
        assert all(r["correct"] for r in kept)


def test_max_trace_tokens_filter(tmp_path, rows):
    out = tmp_path / "traces.jsonl"
    stats = distill(rows, get_task("kk"), CannedTeacher(), out, settings=SamplingSettings(k=3),
                    max_trace_tokens=100)
    assert stats.dropped_too_long == len(rows)
    assert all(r["n_tokens"] <= 100 for r in read(out))


def test_resume_skips_finished_puzzles_and_drops_partial_rows(tmp_path, rows):
    out = tmp_path / "traces.jsonl"
    distill(rows[:2], get_task("kk"), CannedTeacher(), out, settings=SamplingSettings(k=2))
    # A crash after writing a third puzzle's rows but before marking it done:
    with out.open("a") as f:
        f.write(json.dumps({"puzzle_id": rows[2]["id"], "completion": "partial"}) + "\n")
    teacher = CannedTeacher()
    stats = distill(rows, get_task("kk"), teacher, out, settings=SamplingSettings(k=2))
    assert teacher.calls == 1 and stats.skipped_done == 2
    kept = read(out)
    assert len(kept) == 2 * 3
    assert "partial" not in {r["completion"] for r in kept}
    assert [r["puzzle_id"] for r in kept] == [r["id"] for r in rows for _ in range(2)]


def test_bad_keep_policy(tmp_path, rows):
    with pytest.raises(UserError, match="keep policy"):
        distill(rows, get_task("kk"), CannedTeacher(), tmp_path / "t.jsonl", keep="best")


def test_a_teacher_that_cannot_be_reached_leaves_no_traces_file_and_no_done_marker(tmp_path):
    import socket

    from click.testing import CliRunner

    from lowres.cli import cli

    with socket.socket() as free:  # a port on this machine that nothing listens on: the connection is refused
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    out = tmp_path / "traces.jsonl"
    result = CliRunner().invoke(cli, ["distill", "--api-base", f"http://127.0.0.1:{port}/v1", "--model", "m",
                                      "-n", "2", "-k", "1", "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert f"cannot reach the teacher endpoint http://127.0.0.1:{port}/v1/chat/completions" in result.output
    assert sorted(tmp_path.iterdir()) == []  # no empty traces file, no traces.jsonl.done to resume from


@pytest.mark.slow
def test_real_hf_teacher_on_two_puzzles(tmp_path, rows):
    teacher = HFTeacher("embedded:smollm2-135m", batch_size=4)
    out = tmp_path / "traces.jsonl"
    stats = distill(rows[:2], get_task("kk"), teacher, out, settings=SamplingSettings(k=2, max_tokens=48))
    kept = read(out)
    assert stats.sampled == 4 and len(kept) + stats.duplicates == 4
    assert all(0 < r["n_tokens"] <= 48 and r["teacher"] == "embedded:smollm2-135m" for r in kept)

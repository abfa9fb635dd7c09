"""Knights & Knaves: puzzles, solver, verifier and solver-written reasoning traces.

Knights always tell the truth, knaves always lie; a puzzle asks who is who. Statements use the
Logic-RL representation (nested tuples), so its data set maps one to one.
"""

from lowres.tasks.kk.generator import Puzzle, generate_puzzle, generate_puzzles
from lowres.tasks.kk.render import load_logic_rl, parse_quiz, puzzle_from_logic_rl, render_quiz, render_solution
from lowres.tasks.kk.solver import count_solutions, solve
from lowres.tasks.kk.traces import trace_example, write_trace
from lowres.tasks.kk.verify import KKRewards, parse_answer, score_completion

__all__ = [
    "KKRewards", "Puzzle", "count_solutions", "generate_puzzle", "generate_puzzles", "load_logic_rl", "parse_answer",
    "parse_quiz", "puzzle_from_logic_rl", "render_quiz", "render_solution", "score_completion", "solve",
    "trace_example", "write_trace",
]

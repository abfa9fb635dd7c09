"""Answer extraction helpers shared by the graders."""

import pytest

from lowres.tasks.answers import (
    answer_tag,
    has_r1_format,
    last_boxed,
    last_number,
    numbers_equal,
    parse_number,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"so \boxed{5}", "5"),
        (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),
        (r"first \boxed{1} then \boxed{2}", "2"),  # two boxes: the last one
        (r"\boxed{\left\{ 1, 2 \right\}}", r"\left\{ 1, 2 \right\}"),  # nested and escaped braces
        (r"\boxed{{a}^{b_{c}}}", r"{a}^{b_{c}}"),
        (r"\fbox{7}", "7"),
        (r"\boxed{3} and \fbox{4}", "4"),
        (r"The answer is \boxed 5$.", "5"),  # MATH's brace-less form
        (r"\boxed{3} then an unclosed \boxed{4", "3"),
        (r"\boxed{}", ""),
        (r"\boxedx{3}", None),
        ("no box here", None),
        (None, None),
        (42, None),
    ],
)
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<think>x</think><answer> 42 </answer>", "42"),
        ("<answer>1</answer> <answer>2</answer>", "2"),
        ("<answer> cut off by the token limit", "cut off by the token limit"),
        ("<ANSWER>B</ANSWER>", "B"),
        ("nothing", None),
        (None, None),
    ],
)
def test_answer_tag(text, expected):
    assert answer_tag(text) == expected


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("<think> r </think> <answer> a </answer>", True),
        ("r </think>\n<answer>a</answer>\n", True),  # <think> came with the prompt
        ("<think> r </think> <answer> a </answer> trailing text", False),
        ("<think> r </think> </think> <answer> a </answer>", False),
        ("<answer> a </answer> <think> r </think>", False),
        ("<think> r </think> a", False),
        ("", False),
        (None, False),
    ],
)
def test_has_r1_format(text, ok):
    assert has_r1_format(text) is ok


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The total is 1,234 apples", "1234"),
        ("costs $5", "5"),
        ("it is -3 degrees", "-3"),
        ("x = 2.50", "2.5"),
        ("18.00", "18"),
        ("5 - 3 = 2", "2"),
        ("50%", "50"),
        (r"\$1,000,000", "1000000"),
        ("first 3 then 7.", "7"),
        ("no digits", None),
        ("v2 of x3", None),  # digits inside words are not numbers
    ],
)
def test_last_number(text, expected):
    assert last_number(text) == expected


def test_numbers_equal():
    assert numbers_equal("1,234", "1234.0")
    assert numbers_equal("-0", "0")
    assert not numbers_equal("12", "13")
    assert not numbers_equal(None, "1")
    assert parse_number("abc") is None
    assert parse_number("1" * 200) is None

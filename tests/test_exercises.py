"""Every checker passes a correct answer and catches typical wrong ones; stubs are 'not attempted'."""

from __future__ import annotations

import pytest

from course_lib import exercises
from tests.exercise_answers import ANSWERS


def test_every_checker_has_answers():
    assert set(ANSWERS) == set(exercises.registry())


@pytest.mark.parametrize("key", sorted(ANSWERS))
def test_correct_answer_passes(key):
    feedback = exercises.grade(key, ANSWERS[key][0])
    assert feedback.passed, feedback


@pytest.mark.parametrize("key, index", [(k, i) for k in sorted(ANSWERS) for i in range(len(ANSWERS[k][1]))])
def test_wrong_answer_is_caught(key, index):
    feedback = exercises.grade(key, ANSWERS[key][1][index])
    assert feedback.status == "failed", feedback
    assert feedback.message


@pytest.mark.parametrize("key", sorted(ANSWERS))
def test_stub_is_not_attempted(key, capsys):
    def stub(*args):
        raise NotImplementedError

    for answer in (stub, None, ...):
        assert exercises.grade(key, answer).status == "not attempted"
    exercises.check(key, stub)
    assert "not attempted yet" in capsys.readouterr().out


def test_broken_code_is_reported_not_raised():
    feedback = exercises.grade("00.ccc", lambda x, y: x.nonexistent)
    assert feedback.status == "failed" and "AttributeError" in feedback.message


def test_pearson_gets_a_specific_hint():
    assert "Pearson" in exercises.grade("00.ccc", ANSWERS["00.ccc"][1][0]).message


def test_unknown_exercise_lists_known_ones():
    with pytest.raises(KeyError, match="00.ccc"):
        exercises.grade("99.nope", lambda: 0)


def test_pytorch_checkers_leave_the_notebooks_torch_random_state_alone():
    import torch

    for key in ("03.task_adaptive_block", "04.au_assisted_expr", "04.published_attention", "05.fusion_correction",
                "06.causal_conv"):
        torch.manual_seed(123)
        expected = torch.rand(3)
        torch.manual_seed(123)
        assert exercises.grade(key, ANSWERS[key][0]).passed, key
        torch.testing.assert_close(torch.rand(3), expected, msg=key)

"""check_assimilator and methods that refuse a setup in prepare (issue 12, plugin guide): a
refusal is a one-line UsageError; the check reports it as "refused: ..." unless the author says
it is expected (refuses=...), and then it checks the refusal instead."""

import pytest

from interfaces.assimilator import Assimilator
from interfaces.errors import UsageError
from interfaces.testing import check_assimilator


class LinearOnly(Assimilator):
    """Nudging toward the observations, defined only for a linear observation operator."""

    name = "linear-only"
    defaults = {"gain": 0.5, "multiline": False}
    preferred_members = 1

    def prepare(self, context):
        super().prepare(context)
        if not context.operator.linear:
            extra = "\nsee the docs" if self.options["multiline"] else ""
            raise UsageError(f"method '{self.name}' needs a linear observation operator, got '{context.operator.spec}'{extra}")

    def assimilate(self, background, observations, operator):
        H = operator.matrix().to(background.dtype)
        flat = background.reshape(background.shape[0], -1)
        return (flat + self.options["gain"] * (observations.values - flat @ H.T) @ H).reshape(background.shape)


def test_an_accepted_setup_is_checked_as_usual():
    report = check_assimilator(LinearOnly)
    assert "refused" not in report and "state_dict" in report["checks"]


def test_an_unexpected_refusal_is_reported_as_refused_with_its_reason():
    with pytest.raises(AssertionError, match=r"method 'linear-only' refused: .*needs a linear observation operator.*"
                                             r"obs 'arctan\+every:2'.*refuses="):
        check_assimilator(LinearOnly, obs="arctan+every:2")


def test_an_expected_refusal_passes_and_is_reported():
    report = check_assimilator(LinearOnly, obs="arctan+every:2", refuses="needs a linear observation operator")
    assert report["checks"] == ["refusal"]
    assert report["refused"] == "method 'linear-only' needs a linear observation operator, got 'arctan+every:2'"


@pytest.mark.parametrize("obs, refuses, options, needle", [
    ("every:2", "linear", {}, "expected prepare to refuse this setup"),  # accepted, refusal expected
    ("arctan+every:2", "ensemble", {}, "which does not contain 'ensemble'"),  # refused for another reason
    ("arctan+every:2", "linear", {"multiline": True}, "must be one line"),
])
def test_a_wrong_refusal_fails_the_check(obs, refuses, options, needle):
    with pytest.raises(AssertionError, match=needle):
        check_assimilator(LinearOnly, obs=obs, refuses=refuses, options=options)


def test_other_prepare_errors_are_still_contract_failures():
    class Broken(LinearOnly):
        def prepare(self, context):
            raise RuntimeError("boom")

    with pytest.raises(AssertionError, match="failed 'prepare': RuntimeError: boom"):
        check_assimilator(Broken)

"""Method options are checked against the method's signature before any computing: the names
it takes and the types its annotations give."""

import pytest

import sosp
from sosp import methods, models
from sosp.errors import BadInput
from sosp.methods.registry import checked_options


@pytest.mark.parametrize(
    ("method", "options", "says"),
    [
        ("sosp_h", {"hessian": "maybe"}, "method 'sosp_h' option hessian must be true or false"),
        ("sosp_i", {"label_samples": 2.5}, "option label_samples must be an integer or none"),
        ("grad_norm", {"temperature": "hot"}, "option temperature must be a number, not 'hot'"),
        ("magnitude", {"norm": 2}, "option norm must be a string, not 2"),
        ("magnitude", {"p": 2}, "takes no option p; its options: norm"),
    ],
)
def test_ill_typed_and_unknown_options_are_refused(method, options, says):
    """A value of the wrong type (as `--option KEY=VALUE` reads it) is refused naming the
    method, the option and the type, not passed on to fail deep in the computation."""
    with pytest.raises(BadInput, match=says):
        checked_options(method, options)


def test_well_typed_options_pass_unchanged():
    """An int where a float is annotated, None where None is allowed, and a bool pass."""
    options = {"temperature": 200, "absolute": True}
    assert checked_options("grad_norm", options) is options
    assert checked_options("sosp_i", {"label_samples": None, "diagonal": False})
    assert set(methods.registry.option_hints("sosp_h")) == {"hessian"}


def test_prune_checks_option_types_before_computing():
    """`sosp.prune` refuses `hessian="maybe"` with BadInput (it used to reach autograd and end
    in a TypeError)."""
    model = models.create("resnet20", 10, 1, 8)
    with pytest.raises(BadInput, match="hessian must be true or false, not 'maybe'"):
        sosp.prune(model, "sosp_h", 0.5, [], hessian="maybe")

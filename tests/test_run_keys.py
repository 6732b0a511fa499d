"""Run keys depend on the settings' content, not on their order, and never change for the same
settings (cached runs and committed records are found by them)."""

from sosp import run_keys


def test_key_ignores_key_order_and_sees_every_value():
    a = run_keys.run_key("r20", {"lr": 0.1, "seed": 0, "milestones": [1, 2]})
    b = run_keys.run_key("r20", {"milestones": [1, 2], "seed": 0, "lr": 0.1})
    assert a == b and a.startswith("r20-") and len(a) == len("r20-") + 10
    assert a != run_keys.run_key("r20", {"lr": 0.1, "seed": 1, "milestones": [1, 2]})


def test_key_is_stable():
    """The hash of a fixed settings dict is the one every earlier run folder was named by."""
    assert run_keys.run_key("r20", {"lr": 0.1, "seed": 0, "milestones": [1, 2]}) == "r20-328bbf2e9d"

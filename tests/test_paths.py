"""Run keys depend on the settings' content, not on their order."""

from sosp import paths


def test_key_ignores_key_order_and_sees_every_value():
    a = paths.run_key("r20", {"lr": 0.1, "seed": 0, "milestones": [1, 2]})
    b = paths.run_key("r20", {"milestones": [1, 2], "seed": 0, "lr": 0.1})
    assert a == b and a.startswith("r20-") and len(a) == len("r20-") + 10
    assert a != paths.run_key("r20", {"lr": 0.1, "seed": 1, "milestones": [1, 2]})

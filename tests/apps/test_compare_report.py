"""goft compare's tables and plot (goft.apps.compare_report)."""


def test_the_plot_joins_each_capacity_dial_and_nothing_else():
    from goft.apps.compare_report import curve_family

    assert {curve_family(m) for m in ("goft", "goft_tree_depth2", "goft_butterfly")} == {"GOFT"}
    assert {curve_family(m) for m in ("qgoft", "qgoft_butterfly")} == {"qGOFT"}
    assert {curve_family(m) for m in ("lora_r1", "lora_r2", "lora_r4", "lora_r8")} == {"LoRA"}
    singles = ("qgoft_l3", "goft_scaling", "oft", "boft")
    assert len({curve_family(m) for m in singles} | {"GOFT", "qGOFT", "LoRA"}) == len(singles) + 3
    # a data-chosen or random order is its own dial, not a step of the index order's
    assert {curve_family(m) for m in ("goft_task", "goft_butterfly_task")} == {"GOFT, task pairing"}
    assert curve_family("goft_random") == "GOFT, random pairing"


def test_each_point_is_named_by_its_step_on_the_dial():
    from goft.apps.compare_report import curve_family, dial_step
    from goft.apps.methods import METHODS

    named = {m: dial_step(METHODS[m].label, curve_family(m)) for m in METHODS}
    assert named["lora_r8"] == "r=8"
    assert named["goft_tree_depth2"] == "tree, depth 2"
    assert named["goft_butterfly_task"] == "butterfly"
    assert named["goft"] == named["goft_task"] == named["goft_random"] == ""

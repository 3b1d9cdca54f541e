"""goft compare's tables and plot (goft.apps.compare_report)."""


def test_the_plot_joins_each_capacity_dial_and_nothing_else():
    from goft.apps.compare_report import curve_family

    assert {curve_family(m) for m in ("goft", "goft_tree_depth2", "goft_butterfly")} == {"GOFT"}
    assert {curve_family(m) for m in ("qgoft", "qgoft_butterfly")} == {"qGOFT"}
    assert {curve_family(m) for m in ("lora_r1", "lora_r2", "lora_r4", "lora_r8")} == {"LoRA"}
    singles = ("qgoft_l3", "goft_scaling", "oft", "boft")
    assert len({curve_family(m) for m in singles} | {"GOFT", "qGOFT", "LoRA"}) == len(singles) + 3

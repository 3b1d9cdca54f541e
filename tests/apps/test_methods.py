"""The one method registry: every command reads it, and each entry builds the adapter its name promises."""

import pytest
from peft import BOFTConfig, LoraConfig, OFTConfig, get_peft_model
from toys import make_mlp

from goft import GOFTConfig
from goft.apps import bench, methods
from goft.apps.errors import OptionError
from goft.apps.methods import METHODS

# lin0 is 12 -> 7, lin1 is 7 -> 5 in the toy MLP
TARGETS = ["lin0", "lin1"]
EXPECTED = {
    "goft": (GOFTConfig, 11 + 6),
    "goft_scaling": (GOFTConfig, 11 + 6 + 12 + 7),
    "qgoft": (GOFTConfig, 4 * (11 + 6)),
    "qgoft_l3": (GOFTConfig, 4 * (11 + 6)),
    "lora": (LoraConfig, 3 * (12 + 7 + 7 + 5)),  # the plain lora entry takes its rank from lora_r (3 here)
    "lora_r8": (LoraConfig, 8 * (12 + 7 + 7 + 5)),
    "lora_r2": (LoraConfig, 2 * (12 + 7 + 7 + 5)),
    "lora_r1": (LoraConfig, 1 * (12 + 7 + 7 + 5)),
    "lora_r4": (LoraConfig, 4 * (12 + 7 + 7 + 5)),
    # butterfly blocks, counted by hand from the definition: d=12: 6 + 6 + 4 + 4, d=7: 3 + 3 + 3
    "goft_butterfly": (GOFTConfig, 20 + 9),
    "qgoft_butterfly": (GOFTConfig, 4 * (20 + 9)),
    "goft_tree_depth2": (GOFTConfig, 2 * (11 + 6)),
    "goft_task": (GOFTConfig, 11 + 6),  # a pairing reorders coordinates: no parameter more
    "goft_butterfly_task": (GOFTConfig, 20 + 9),
    "goft_random": (GOFTConfig, 11 + 6),
    "oft": (OFTConfig, None),  # PEFT's block sizes need wider layers than the toy's; their type is what is ours
    "boft": (BOFTConfig, None),
}


@pytest.mark.parametrize("name", [n for n, m in METHODS.items() if m.adapts])
def test_each_adapter_entry_builds_its_config_and_parameter_count(name):
    config_class, want_params = EXPECTED[name]
    config = METHODS[name].peft_config(TARGETS, lora_r=3)
    assert type(config) is config_class and set(config.target_modules) == set(TARGETS)
    if want_params is not None:
        assert methods.count_parameters(methods.wrap(make_mlp(), config)) == want_params


def test_an_entrys_own_penalty_weight_wins():
    assert METHODS["qgoft_l3"].peft_config(TARGETS, orth_reg_weight=0.5).orth_reg_weight == 1e-3
    assert METHODS["qgoft"].peft_config(TARGETS, orth_reg_weight=0.5).orth_reg_weight == 0.5


def test_identity_init_is_the_default_and_can_be_turned_off():
    x = make_mlp().lin0.weight.new_ones(2, 12)
    for name in ("goft", "qgoft", "lora_r8"):
        base = make_mlp()
        assert (methods.wrap(make_mlp(), METHODS[name].peft_config(TARGETS))(x) == base(x)).all()
        assert not (
            methods.wrap(make_mlp(), METHODS[name].peft_config(TARGETS, identity_init=False))(x) == base(x)
        ).all()


def test_every_command_names_registry_entries():
    for names in (
        methods.FINETUNE_METHODS,
        methods.COMPARE_DEFAULT,
        methods.INSTRUCT_METHODS,
        bench.E2E_METHODS,
        [m for m in bench.LAYER_METHODS if m not in ("frozen", "authors_dense")],
    ):
        assert set(names) <= set(METHODS), names
    assert all(METHODS[m].instruct_lr is not None for m in methods.INSTRUCT_METHODS)
    assert all(m.lr > 0 for m in METHODS.values())


def test_unknown_names_are_refused_with_the_allowed_ones():
    with pytest.raises(OptionError, match=r"^method must be one of goft, qgoft, lora, oft, got 'lora_r8'$"):
        methods.get_method("lora_r8", methods.INSTRUCT_METHODS)
    with pytest.raises(OptionError, match=r"^methods has unknown \['x'\]; allowed: goft"):
        methods.method_list("goft, x", tuple(METHODS))
    with pytest.raises(OptionError, match="^methods needs at least one of"):
        methods.method_list(" , ", tuple(METHODS))


def test_head_parameters_are_recognised_under_peft_wrapping():
    assert methods.is_head_parameter("classifier.weight")
    assert methods.is_head_parameter("base_model.model.classifier.modules_to_save.default.bias")
    assert methods.is_head_parameter("base_model.model.score.modules_to_save.default.weight")
    assert not methods.is_head_parameter("base_model.model.bert.encoder.layer.0.attention.self.query.goft_theta")
    assert not methods.is_head_parameter("base_model.model.scorer_proj.weight")


def test_not_an_adapter():
    with pytest.raises(ValueError, match="head is not a PEFT adapter"):
        METHODS["head"].peft_config(TARGETS)


def test_wrap_is_get_peft_model():
    config = METHODS["goft"].peft_config(TARGETS)
    a, b = methods.wrap(make_mlp(), config), get_peft_model(make_mlp(), METHODS["goft"].peft_config(TARGETS))
    assert [n for n, _ in a.named_parameters()] == [n for n, _ in b.named_parameters()]


def test_finetunes_default_rate_is_the_rate_chosen_for_what_it_trains():
    from goft.apps.configs import FinetuneConfig

    assert methods.default_lr("goft") == METHODS["goft"].chosen_lr
    assert methods.default_lr("goft", structure="butterfly") == METHODS["goft_butterfly"].chosen_lr
    assert methods.default_lr("lora") == METHODS["lora_r8"].chosen_lr  # --lora-r defaults to 8
    assert methods.default_lr("lora", r=2) == METHODS["lora_r2"].chosen_lr
    # no sweep chose a rate for these: the sweep's centre
    assert methods.chosen_lr("goft", structure="butterfly", depth=2) is None
    assert methods.default_lr("goft", structure="butterfly", depth=2) == METHODS["goft"].lr
    assert methods.default_lr("qgoft") == METHODS["qgoft"].lr
    assert FinetuneConfig(method="goft", orth_reg_weight=1e-3).learning_rate == METHODS["goft"].chosen_lr  # λ: qGOFT's
    assert FinetuneConfig(method="qgoft", structure="butterfly").learning_rate == METHODS["qgoft"].lr
    assert FinetuneConfig(method="lora", lora_r=4).learning_rate == METHODS["lora_r4"].chosen_lr
    assert FinetuneConfig(method="goft", lr=0.5).learning_rate == 0.5


def test_the_family_defaults_are_goftconfigs_and_the_commands():
    from dataclasses import fields

    from goft.apps.configs import FinetuneConfig

    goft_defaults = {f.name: f.default for f in fields(GOFTConfig)}
    assert methods.FAMILY_DEFAULTS["goft"] == {k: goft_defaults[k] for k in methods.FAMILY_DEFAULTS["goft"]}
    assert methods.FAMILY_DEFAULTS["lora"] == {"r": FinetuneConfig().lora_r}


def test_each_chosen_rate_is_what_the_recorded_sweeps_chose_on_both_tasks():
    # the evidence behind chosen_lr: results/<task>.json's validation sweeps (MiniLM, 3 epochs), and chosen_lr is
    # set exactly where both tasks' sweeps chose the same rate
    from pathlib import Path

    from goft.apps import results as results_files
    from goft.apps.protocol import choose_lr, lr_grid

    results = Path(__file__).resolve().parents[2] / "results"
    runs = {task: results_files.load(results / f"{task}.json", "compare")["runs"] for task in ("polarity", "hedge")}
    for name, entry in METHODS.items():
        grid = lr_grid(entry.lr)
        swept = [
            task
            for task in runs
            if {r["lr"] for r in runs[task] if r["method"] == name and r["stage"] == "sweep" and r["epochs"] == 3}
            >= set(grid)
        ]
        chosen = {choose_lr(runs[task], name, grid, lambda r: r["epochs"] == 3) for task in swept}
        if entry.chosen_lr is not None:
            assert len(swept) == 2 and chosen == {entry.chosen_lr}, name
        elif len(swept) == 2:
            assert len(chosen) == 2, f"{name}: both tasks chose {chosen}, so its chosen_lr should say so"


def test_each_instruct_default_is_what_the_recorded_sweep_chose():
    # the evidence behind instruct_chosen_lr: results/smollm2-instruct.json's validation sweeps (SmolLM2, fp32 base,
    # today's schedule); a method whose sweep is complete must have its choice as the default, and one whose sweep is
    # not must keep the grid's centre
    from pathlib import Path

    from goft.apps import results
    from goft.apps.instruct import SCHEDULE, InstructConfig, trained_like
    from goft.apps.protocol import choose_lr, lr_grid

    path = Path(__file__).resolve().parents[2] / "results" / "smollm2-instruct.json"
    runs = results.load(path, "instruct")["runs"]
    base = InstructConfig()
    for name in methods.INSTRUCT_METHODS:
        entry, grid = METHODS[name], lr_grid(METHODS[name].instruct_lr)
        swept = {
            r["lr"]
            for r in runs
            if r["method"] == name
            and r["stage"] == "sweep"
            and r["base_weights"] == "fp32"
            and r["schedule"] == SCHEDULE
        }
        if swept >= set(grid):
            assert entry.instruct_chosen_lr == choose_lr(runs, name, grid, trained_like(base)), name
            assert InstructConfig(method=name).learning_rate == entry.instruct_chosen_lr
        else:
            assert entry.instruct_chosen_lr is None, f"{name}: its sweep in {path.name} is not complete"
            assert InstructConfig(method=name).learning_rate == entry.instruct_lr
    assert METHODS["goft"].instruct_chosen_lr is not None  # its sweep is recorded: the test above is not vacuous

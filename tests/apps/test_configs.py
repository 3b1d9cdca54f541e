"""Each option is stated once, in its config's field: the parsers take their defaults and help from there."""

from dataclasses import fields

import pytest

from goft.apps.configs import FinetuneConfig, InstructConfig, comma_list
from goft.apps.errors import OptionError
from goft.apps.parsers import build_parser


def subcommand_parser(name):
    parser = build_parser()
    return next(a for a in parser._subparsers._group_actions if a.dest == "command").choices[name]


@pytest.mark.parametrize(
    ("command", "config"), [("finetune", FinetuneConfig), ("compare", FinetuneConfig), ("instruct", InstructConfig)]
)
def test_every_config_option_has_its_fields_default_and_shows_it(command, config):
    parser = subcommand_parser(command)
    by_dest = {a.dest: a for a in parser._actions}
    defaults = {f.name: f.default for f in fields(config)}
    names = parser.get_default("config_fields")
    assert names and set(names) <= set(defaults)
    for name in names:
        action = by_dest[name]
        assert action.default == defaults[name], name
        shown = parser._get_formatter()._expand_help(action)  # the help line as --help prints it, unwrapped
        if not isinstance(defaults[name], bool) and defaults[name] is not None:
            assert shown.endswith(f"(default: {defaults[name]})"), (name, shown)


def test_a_changed_default_reaches_the_parser(monkeypatch):
    field = next(f for f in fields(InstructConfig) if f.name == "epochs")
    monkeypatch.setattr(field, "default", 4)
    assert subcommand_parser("instruct").parse_args([]).epochs == 4


def test_options_from_the_command_line_build_the_config():
    args = build_parser().parse_args(
        ["finetune", "--epochs", "2", "--target-modules", "query, value", "--no-progress"]
    )
    from goft.apps.parsers import config_from

    cfg = config_from(args, FinetuneConfig)
    assert (cfg.epochs, cfg.target_modules, cfg.progress, cfg.batch_size) == (2, ["query", "value"], False, 32)
    assert comma_list("") is None and comma_list(" , ") is None


@pytest.mark.parametrize(
    ("config", "values", "option"),
    [
        (FinetuneConfig, {"epochs": 0}, "epochs"),
        (FinetuneConfig, {"lr": -1.0}, "lr"),
        (FinetuneConfig, {"save_every": 5}, "output"),
        (FinetuneConfig, {"depth": 0}, "depth"),
        (InstructConfig, {"val_size": 0}, "val_size"),
        (InstructConfig, {"method": "boft"}, "method"),
        (InstructConfig, {"lr": 0.0}, "lr"),
    ],
)
def test_the_shared_checks_name_the_option(config, values, option):
    with pytest.raises(OptionError) as refused:
        config(**values)
    assert refused.value.option == option

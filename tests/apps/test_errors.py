"""The applications' errors (goft.apps.errors): a user's mistake says which option, in the command line's words."""

import pytest

from goft.apps.errors import AppError, DataError, Interrupted, ModelUnavailableError, OptionError, OutputError


def test_an_option_error_names_the_field_and_the_flag():
    err = OptionError("train_size", "must be at least 2, got 1")
    assert (err.option, str(err), err.as_flag()) == (
        "train_size",
        "train_size must be at least 2, got 1",
        "--train-size must be at least 2, got 1",
    )


@pytest.mark.parametrize("kind", [OptionError, DataError, ModelUnavailableError, OutputError, Interrupted])
def test_every_user_facing_error_is_an_app_error(kind):
    assert issubclass(kind, AppError)


def test_an_interruption_says_where_its_checkpoint_is_or_that_nothing_was_kept(tmp_path):
    assert (
        str(Interrupted(tmp_path / "checkpoint.pt", 3))
        == f"stopped after step 3; checkpoint written to {tmp_path}/checkpoint.pt"
    )
    assert str(Interrupted(None, 0)) == "stopped after step 0; nothing saved (no --output)"

"""The results tables of the README and docs/results.md are what the committed results/*.json make."""

import pytest

from goft.apps import results_pages


@pytest.mark.parametrize("name", results_pages.PAGES)
def test_each_marked_table_is_what_its_results_files_make(name):
    text = (results_pages.ROOT / name).read_text()
    assert results_pages.MARKED.search(text), f"{name} marks no table"
    assert results_pages.regenerate(text) == text, f"{name} is stale: run python -m goft.apps.results_pages"


def test_a_changed_number_is_caught(tmp_path):
    text = (results_pages.ROOT / "docs/results.md").read_text()
    assert results_pages.regenerate(text.replace("81.46 ± 1.57", "91.46 ± 1.57", 1)) == text


def test_an_unknown_kind_is_named():
    with pytest.raises(ValueError, match="unknown table kind 'chart'"):
        results_pages.regenerate("<!-- table: chart results/polarity.json -->\n| x |\n<!-- end table -->")

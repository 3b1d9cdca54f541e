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


def test_each_compare_report_beside_a_named_results_file_is_current():
    from goft.apps.compare_report import report_text
    from goft.apps.results import load

    named = {
        n for page in results_pages.PAGES for n in results_pages.compare_files((results_pages.ROOT / page).read_text())
    }
    assert {"results/polarity.json", "results/hedge.json"} <= named
    for name in named:
        report = (results_pages.ROOT / name).with_suffix(".md")
        assert report.read_text() == report_text(load(results_pages.ROOT / name, "compare")), f"{report} is stale"


def test_a_tasks_table_can_show_named_methods_only_and_names_a_missing_one():
    spec = "<!-- table: tasks results/polarity.json results/hedge.json lora_r8 goft -->\n<!-- end table -->"
    rows = results_pages.regenerate(spec).splitlines()[3:-1]
    assert [r.split(" | ")[0].strip("| ") for r in rows] == ["LoRA r=8", "GOFT"]
    assert results_pages.compare_files(spec) == ["results/polarity.json", "results/hedge.json"]
    with pytest.raises(ValueError, match="no final runs on both tasks for goft_nonesuch"):
        results_pages.regenerate(spec.replace("goft -->", "goft_nonesuch -->"))

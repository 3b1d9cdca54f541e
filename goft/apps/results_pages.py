"""The results tables of the README and docs/results.md, made from the committed ``results/*.json`` by one function.

A page marks each table it shows with ``<!-- table: KIND FILE... -->`` before it and ``<!-- end table -->`` after it;
:func:`regenerate` rewrites what lies between from the named results files (the prose around them is the page's own).
Kinds: ``tasks FILE FILE [METHOD...]`` (test accuracy on two tasks side by side, rates chosen on validation; only
the named methods, in that order, where some are named), ``single FILE``
(one task's reported runs), ``instruct FILE`` (goft instruct's table, today's protocol on the fp32 base),
``export FILE`` (a LoRA export's fidelity against rank, from ``bench/lora_export_fidelity.py``).
``python -m goft.apps.results_pages`` rewrites the pages, and the report beside each ``goft compare`` file a page names
(``results/<task>.md`` and ``.png``, as ``goft compare`` writes them after each run); ``--check`` only says whether the
pages and those ``.md`` reports are current (a picture is redrawn, not compared).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from . import files
from .compare_report import report_text, summarize, write_report
from .instruct_report import instruct_table
from .results import INSTRUCT_SCHEDULE, LEGACY_STAGE, load, markdown_table

ROOT = Path(__file__).resolve().parents[2]
PAGES = ("README.md", "docs/results.md")
# how many goft compare results files a table of each kind names first (a tasks table may name methods after them)
COMPARE_FILES = {"tasks": 2, "single": 1}
MARKED = re.compile(r"(<!-- table: (?P<spec>[^>]*?) -->\n)(?P<table>.*?)(<!-- end table -->)", re.S)


def _device(devices: str) -> str:
    return " / ".join(sorted({"CPU" if d.strip() == "cpu" else "GPU" for d in devices.split(" / ")}))


def tasks_table(first: dict, second: dict, methods: tuple[str, ...] = ()) -> str:
    """One row per method with final runs on both tasks (only ``methods``, in their order, where given; otherwise
    every such method in order of adapter parameters): test accuracy mean ± std and the chosen rate on each, and
    where the runs trained."""
    rows_a = {r["method"]: r for r in summarize(first)}
    rows_b = {r["method"]: r for r in summarize(second)}
    if methods:
        missing = [m for m in methods if m not in rows_a or m not in rows_b]
        if missing:
            raise ValueError(f"no final runs on both tasks for {', '.join(missing)}")
        both = list(methods)
    else:
        both = sorted((m for m in rows_a if m in rows_b), key=lambda m: rows_a[m]["adapter_params"])
    header = ("method", "adapter params", first["task"], "rate", second["task"], "rate", "trained on")
    cells = [
        (
            rows_a[m]["label"],
            f"{rows_a[m]['adapter_params']:,}",
            f"{100 * rows_a[m]['mean']:.2f} ± {100 * rows_a[m]['std']:.2f}",
            f"{rows_a[m]['lr']:g}",
            f"{100 * rows_b[m]['mean']:.2f} ± {100 * rows_b[m]['std']:.2f}",
            f"{rows_b[m]['lr']:g}",
            _device(f"{rows_a[m]['device']} / {rows_b[m]['device']}"),
        )
        for m in both
    ]
    return markdown_table(header, cells, align="lrrrrrl")


def single_table(results: dict) -> str:
    """One row per method: adapter parameters, test accuracy (mean ± std over seeds) and its rate."""
    header = ("method", "adapter params", f"{results['task']} test (seeds)", "rate")
    cells = [
        (r["label"], f"{r['adapter_params']:,}", f"{100 * r['mean']:.2f} ({r['n']})", f"{r['lr']:g}")
        for r in summarize(results)
    ]
    return markdown_table(header, cells)


def export_table(fidelity: dict) -> str:
    """``bench/lora_export_fidelity.py``'s rows: the GOFT adapter, then its LoRA export at each rank."""
    header = (
        "LoRA rank",
        "LoRA numbers",
        "update error, median / worst layer",
        "merged-weight error, worst layer",
        "test accuracy",
    )
    cells = [("GOFT itself", f"{fidelity['goft_parameters']:,}", "—", "—", f"{100 * fidelity['goft_accuracy']:.2f}")]
    cells += [
        (
            str(row["rank"]),
            f"{row['lora_parameters']:,}",
            f"{row['update_error_median']:.3f} / {row['update_error_max']:.3f}",
            f"{row['weight_error_max']:.3g}",
            f"{100 * row['accuracy']:.2f}",
        )
        for row in fidelity["rows"]
    ]
    return markdown_table(header, cells)


def table(spec: str, root: Path = ROOT) -> str:
    kind, *names = spec.split()
    if kind in COMPARE_FILES:
        count = COMPARE_FILES[kind]
        runs = [load(root / name, "compare") for name in names[:count]]
        return tasks_table(*runs, tuple(names[count:])) if kind == "tasks" else single_table(*runs)
    if kind == "export":
        return export_table(files.read_json(root / names[0], ValueError, "a LoRA export fidelity file"))
    if kind == "instruct":
        data = load(root / names[0], "instruct")
        current = [
            r
            for r in data["runs"]
            if r["stage"] != LEGACY_STAGE and r["schedule"] == INSTRUCT_SCHEDULE and r["base_weights"] == "fp32"
        ]
        return instruct_table({**data, "runs": current})
    raise ValueError(f"unknown table kind {kind!r} in <!-- table: {spec} -->")


def regenerate(text: str, root: Path = ROOT) -> str:
    return MARKED.sub(lambda m: m.group(1) + table(m.group("spec"), root) + m.group(4), text)


def compare_files(text: str) -> list[str]:
    """The ``goft compare`` results files a page's tables are made from."""
    specs = (m.group("spec").split() for m in MARKED.finditer(text))
    return [name for kind, *names in specs if kind in COMPARE_FILES for name in names[: COMPARE_FILES[kind]]]


def main(argv: list[str] | None = None) -> int:
    check = "--check" in (sys.argv[1:] if argv is None else argv)
    stale = []
    reports = []
    for name in PAGES:
        page = ROOT / name
        text = page.read_text()
        reports += [r for r in compare_files(text) if r not in reports]
        new = regenerate(text)
        if new != text:
            stale.append(name)
            if not check:
                files.write_text(page, new)
    for name in reports:
        results, report = load(ROOT / name, "compare"), (ROOT / name).with_suffix(".md")
        if not report.exists() or report.read_text() != report_text(results):
            stale.append(str(report.relative_to(ROOT)))
        if not check:  # the picture is redrawn even where the tables are current: its code may have changed
            write_report(results, report, report.with_suffix(".png"))
    print(("stale: " if check else "rewrote: ") + ", ".join(stale) if stale else "all results tables are current")
    if not check:
        print("redrew the pictures of " + ", ".join(reports))
    return 1 if check and stale else 0


if __name__ == "__main__":
    raise SystemExit(main())

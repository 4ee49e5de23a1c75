"""Every figure README.md and docs/ quote with a source marker still matches its result file.

A re-run benchmark that moves a number makes this fail until the docs quote the new one
(the marker syntax is in tests/support/doc_figures.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.doc_figures import check, find_figures

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "benchmarks" / "results"
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), *sorted(RESULTS.glob("*.md"))]


def _all_figures():
    return [f for doc in DOCS for f in find_figures(doc, RESULTS, REPO)]


def test_quoted_figures_match_their_result_files():
    figures = _all_figures()
    problems = [p for p in map(check, figures) if p]
    assert not problems, "stale or broken figures:\n" + "\n".join(problems)


def test_the_headline_figures_carry_sources():
    # The README's demo table and the docs' scaling inputs are what users quote: they must stay tied.
    by_doc = {}
    for f in _all_figures():
        by_doc.setdefault(f.doc.name, []).append(f)
    assert len(by_doc.get("README.md", [])) >= 20
    assert len(by_doc.get("scaling.md", [])) >= 10


@pytest.fixture
def tiny(tmp_path):
    (tmp_path / "r.json").write_text(
        json.dumps(
            {
                "m": {"auc": 0.7714, "ci": [0.7161, 0.8189]},
                "rows": [{"k": "a", "v": 5_671_234.0, "w": 1}, {"k": "a", "v": 2.0, "w": "x y"}],
                "f": 0.912,
                "by name": {"loader, wds, 1 worker": 56.17},
            }
        )
    )
    return tmp_path


def _one(tiny, text):
    doc = tiny / "doc.md"
    doc.write_text(text)
    (fig,) = find_figures(doc, tiny, tiny)
    return check(fig)


@pytest.mark.parametrize(
    "text",
    [
        "AUROC **0.771**<!--fig r.json:m.auc--> held out",
        "CI [0.716, 0.819]<!--fig r.json:m.ci-->",
        "| 5.67M<!--fig r.json:rows[k=a&w=1].v--> events/s |",
        '2.0<!--fig r.json:rows[w="x y"].v--> s',
        '56.2<!--fig r.json:"by name"["loader, wds, 1 worker"]--> vol/s',
        "91%<!--fig r.json:f scale=100-->",
        "0.77<!--fig r.json:m.auc tol=0.01-->",
    ],
)
def test_matching_figures_pass(tiny, text):
    assert _one(tiny, text) is None


@pytest.mark.parametrize(
    "text",
    [
        "AUROC **0.796**<!--fig r.json:m.auc-->",  # a stale number
        "CI [0.716, 0.820]<!--fig r.json:m.ci-->",
        "5.60M<!--fig r.json:rows[k=a&w=1].v-->",
        "5.67M<!--fig r.json:rows[k=a].v-->",  # two records match: ambiguous
        "90%<!--fig r.json:f scale=100-->",
        "0.771<!--fig r.json:m.missing-->",  # a key that went away
        "0.771<!--fig gone.json:m.auc-->",  # a file that went away
    ],
)
def test_stale_or_broken_figures_fail(tiny, text):
    assert _one(tiny, text) is not None


def test_a_marker_without_a_number_is_an_error(tiny):
    doc = tiny / "doc.md"
    doc.write_text("see the table<!--fig r.json:m.auc-->\n")
    with pytest.raises(ValueError, match="no number"):
        find_figures(doc, tiny, tiny)

"""scripts/ui_summary.py: what it counts from the GraphQL answer (the webserver itself is run by hand, see README)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "ui_summary.py"


def _module():
    spec = importlib.util.spec_from_file_location("ui_summary", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _node(name, group, *, kinds=("python",), owners=True, code=True, entries=(), checks=1):
    return {"assetKey": {"path": [name]}, "groupName": group, "description": f"{name} does x", "kinds": list(kinds),
            "isPartitioned": False,
            "owners": [{"__typename": "TeamAssetOwner", "team": "t"}] if owners else [],
            "metadataEntries": [{"__typename": "CodeReferencesMetadataEntry", "label": "dagster/code_references"}]
            if code else [],
            "assetChecksOrError": {"__typename": "AssetChecks", "checks": [{"name": f"c{i}"} for i in range(checks)]},
            "assetMaterializations": [{"partition": None, "metadataEntries": list(entries)}] if entries else []}


def test_counts_per_group_and_what_the_page_hides_or_shows_as_markup():
    ui = _module()
    md = lambda label, n: {"__typename": "MarkdownMetadataEntry", "label": label, "mdStr": "x" * n}  # noqa: E731
    nodes = [
        _node("a", "poetry", entries=[md("preview", 999), md("files", 1000), md("plot_full", 30_000),
                                      {"__typename": "TextMetadataEntry", "label": "t", "text": "| a |\n|---|"}]),
        _node("b", "poetry", kinds=(), owners=False, code=False, checks=0),
        _node("c", "thyme", entries=[{"__typename": "IntMetadataEntry", "label": "n"}]),
    ]
    summary = ui.summarize(nodes)
    poetry, thyme = summary["poetry"], summary["thyme"]
    assert (poetry["assets"], poetry["kinds"], poetry["owners"], poetry["code_refs"], poetry["checks"]) == (2, 1, 1, 1, 1)
    assert poetry["missing"]["kinds"] == ["b"] and poetry["materialized"] == 1
    assert (poetry["md_behind_click"], poetry["md_full_copies"], poetry["text_like_markdown"]) == (1, 1, 1)
    assert poetry["missing"]["markdown_in_place"] == ["a:files (1,000)"]
    assert thyme["metadata_types"] == {"Int": 1} and thyme["md_behind_click"] == 0
    text = ui.render(summary, missing=True)
    assert "markdown behind a click (1,000+ characters): poetry 1, thyme 0; total 1 (+ 1 *_full" in text
    assert "plain text that looks like markdown: 1" in text and "poetry without kinds: b" in text

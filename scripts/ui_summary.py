"""What the Dagster UI shows for every asset, summed per group, from a running webserver's GraphQL API.

Starts nothing: point it at ``bash scripts/dagster.sh dev`` (or any ``dagster-webserver``) and it prints, per
asset group, how many assets have a description, kinds, owners and a code reference, how many asset checks
they carry, how many have been materialized, and the metadata entry types of each asset's latest
materialization (counts per type, summed over the group). ``plain text that looks like markdown`` counts
text entries starting with a markdown table, image or heading: they show their markup in the UI.
``markdown behind a click`` counts markdown entries of 1,000 characters or more, which the UI shows only
behind "[Show Markdown]" (entries named ``*_full`` are such copies on purpose and are counted apart).

    .venv/bin/python scripts/ui_summary.py                          # http://127.0.0.1:3000/graphql
    .venv/bin/python scripts/ui_summary.py --url http://host:3000/graphql --missing   # + the assets lacking one
    .venv/bin/python scripts/ui_summary.py --json                   # the same numbers as JSON

Standard library only (urllib), so it runs from any Python.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from typing import Any

DEFAULT_URL = "http://127.0.0.1:3000/graphql"

QUERY = """
query UiSummary {
  assetNodes {
    assetKey { path }
    groupName
    description
    kinds
    isPartitioned
    owners { __typename ... on TeamAssetOwner { team } ... on UserAssetOwner { email } }
    metadataEntries { __typename label }
    assetChecksOrError { __typename ... on AssetChecks { checks { name } } }
    assetMaterializations(limit: 1) {
      partition
      metadataEntries { __typename label ... on TextMetadataEntry { text } ... on MarkdownMetadataEntry { mdStr } }
    }
  }
}
"""

PROPERTIES = ("described", "kinds", "owners", "code_refs")
MARKDOWN_STARTS = ("|", "![", "# ", "## ", "**")
INLINE_MD_LIMIT = 1000  # the UI shows a markdown entry in place only below this many characters


def fetch(url: str, timeout: float = 60.0) -> list[dict[str, Any]]:
    """The asset nodes of every code location the webserver serves (raises on a GraphQL error)."""
    body = json.dumps({"query": QUERY}).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        reply = json.load(response)
    if reply.get("errors"):
        raise RuntimeError(f"GraphQL errors: {json.dumps(reply['errors'])[:2000]}")
    return reply["data"]["assetNodes"]


def _type(entry: dict) -> str:
    name = entry["__typename"]
    return name[: -len("MetadataEntry")] if name.endswith("MetadataEntry") else name


def summarize(nodes: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``{group: {assets, described, kinds, owners, code_refs, checks, materialized, metadata_types,
    text_like_markdown, missing}}``, groups sorted by name."""
    groups: dict[str, dict[str, Any]] = defaultdict(lambda: {
        "assets": 0, **dict.fromkeys(PROPERTIES, 0), "checks": 0, "materialized": 0,
        "metadata_types": Counter(), "text_like_markdown": 0, "md_behind_click": 0, "md_full_copies": 0,
        "missing": defaultdict(list)})
    for node in nodes:
        g = groups[node["groupName"]]
        key = "/".join(node["assetKey"]["path"])
        g["assets"] += 1
        has = {"described": bool((node.get("description") or "").strip()), "kinds": bool(node["kinds"]),
               "owners": bool(node["owners"]),
               "code_refs": any(e["__typename"] == "CodeReferencesMetadataEntry" for e in node["metadataEntries"])}
        for prop, ok in has.items():
            g[prop] += ok
            if not ok:
                g["missing"][prop].append(key)
        checks = node["assetChecksOrError"]
        g["checks"] += len(checks.get("checks", [])) if checks["__typename"] == "AssetChecks" else 0
        latest = node["assetMaterializations"]
        if latest:
            g["materialized"] += 1
            for entry in latest[0]["metadataEntries"]:
                g["metadata_types"][_type(entry)] += 1
                if entry["__typename"] == "TextMetadataEntry" and entry["text"].lstrip().startswith(MARKDOWN_STARTS):
                    g["text_like_markdown"] += 1
                    g["missing"]["markdown_as_text"].append(f"{key}:{entry['label']}")
                if entry["__typename"] == "MarkdownMetadataEntry" and len(entry["mdStr"]) >= INLINE_MD_LIMIT:
                    full = entry["label"].endswith("_full")
                    g["md_full_copies" if full else "md_behind_click"] += 1
                    if not full:
                        g["missing"]["markdown_in_place"].append(f"{key}:{entry['label']} ({len(entry['mdStr']):,})")
    return {name: groups[name] for name in sorted(groups)}


def _row(cells: list[Any], widths: list[int]) -> str:
    return "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))


def render(summary: dict[str, dict[str, Any]], *, missing: bool = False) -> str:
    head = ["group", "assets", "described", "kinds", "owners", "code refs", "checks", "materialized"]
    rows = [[name, g["assets"], *(g[p] for p in PROPERTIES), g["checks"], g["materialized"]]
            for name, g in summary.items()]
    rows.append(["total", *(sum(r[i] for r in rows) for i in range(1, len(head)))])
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    lines = [_row(head, widths), _row(["-" * w for w in widths], widths), *(_row(r, widths) for r in rows), ""]
    lines.append("metadata entry types of each asset's latest materialization (counts):")
    total: Counter = Counter()
    for name, g in summary.items():
        total.update(g["metadata_types"])
        types = ", ".join(f"{t} {n}" for t, n in g["metadata_types"].most_common()) or "(nothing materialized)"
        lines.append(f"  {name}: {types}")
    lines.append(f"  total: {', '.join(f'{t} {n}' for t, n in total.most_common()) or '(nothing materialized)'}")
    lines.append(f"plain text that looks like markdown: {sum(g['text_like_markdown'] for g in summary.values())}")
    lines.append("markdown behind a click (1,000+ characters): "
                 + ", ".join(f"{name} {g['md_behind_click']}" for name, g in summary.items())
                 + f"; total {sum(g['md_behind_click'] for g in summary.values())}"
                 + f" (+ {sum(g['md_full_copies'] for g in summary.values())} *_full copies of plots shown in place)")
    if missing:
        lines.append("")
        for name, g in summary.items():
            for prop, keys in sorted(g["missing"].items()):
                lines.append(f"  {name} without {prop}: {', '.join(keys)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=DEFAULT_URL, help=f"the webserver's GraphQL endpoint (default {DEFAULT_URL})")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the answer")
    parser.add_argument("--missing", action="store_true", help="also list the assets lacking each property")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    try:
        nodes = fetch(args.url, args.timeout)
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        print(f"no Dagster webserver answers at {args.url} ({exc}); start one: bash scripts/dagster.sh dev",
              file=sys.stderr)
        return 2
    summary = summarize(nodes)
    print(json.dumps(summary, indent=2, default=dict) if args.json else render(summary, missing=args.missing))
    return 0


if __name__ == "__main__":
    sys.exit(main())

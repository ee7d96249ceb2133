"""The ground-truth steps end to end on small in-test data: sources -> cleaned candidates -> prefilter ->
oracle (scripted client) or labels file -> splits; and two oracles' agreement."""

from __future__ import annotations

import json

from distillery_assets.filters import ground_truth as gt
from distillery_assets.filters.config import load_filter
from distillery_assets.filters.splits import write_splits
from tests.support.filters_defs import copy_filter, edit_config, oracle_client

LONG = ("Photosynthesis is the process by which green plants turn light, water and carbon dioxide into sugar "
        "and oxygen. ") * 5


def _folder(tmp_path, docs):
    folder = copy_filter(tmp_path / "defs")
    path = folder / "articles.jsonl"
    path.write_text("\n".join(json.dumps(d) for d in docs) + "\n", encoding="utf-8")
    edit_config(folder, lambda c: c.__setitem__("sources", [{"kind": "jsonl", "path": "articles.jsonl"}]))
    return folder


def _answer(messages, **_):
    body = messages[0].content
    level = 8 if "Photosynthesis" in body else 2
    if "BROKEN" in body:
        return "no idea"
    return json.dumps({"knowledge_depth": level, "clarity": level, "coherence": 7, "teaching_devices": level,
                       "reliability": level, "audience_fit": level, "content_type": "other"})


def test_sources_to_splits_with_the_llm_oracle(tmp_path):
    docs = [{"id": f"p{i}", "title": f"<b>Plants {i}</b>", "content": f"<p>{LONG}</p>\u200b"} for i in range(12)]
    docs += [{"id": f"x{i}", "title": f"Other {i}", "content": "Notes about nothing much at all. " * 12} for i in range(12)]
    docs += [{"id": "short", "content": "tiny"}, {"id": "broken", "title": "BROKEN", "content": LONG},
             {"id": "html-only", "content": "<div><script>x()</script></div>"}]
    folder = _folder(tmp_path, docs)
    edit_config(folder, lambda c: c["oracle"].__setitem__("max_documents", None))
    d = load_filter(folder)
    cands = gt.candidates(d, locate=lambda src: None)
    assert len(cands.documents) == 26 and cands.emptied_by_cleaning == 1
    assert cands.documents[0]["title"] == "Plants 0" and "<p>" not in cands.documents[0]["content"]
    assert "\u200b" not in cands.documents[0]["content"]
    pre = gt.prefilter(d, cands.documents)
    assert pre.summary.blocked == 1 and pre.decisions[-2].reason == "content_too_short"  # "short"
    assert pre.summary.as_dict()["expected_pass_rate"] == 0.95  # the shipped config's value
    client = oracle_client(_answer)
    truth = gt.label(d, pre.passed, client, journal=tmp_path / "j.jsonl")
    assert len(truth.records) == 24 and [r["key"] for r in truth.rejects] == ["broken"]
    assert truth.rejects[0]["reason"] == "invalid_json" and truth.summary["records"] == 24
    tiers = {r["id"]: r["tier"] for r in truth.records}
    assert tiers["p0"] == "excellent" and tiers["x0"] == "not_educational"
    again = gt.label(d, pre.passed, oracle_client(_answer), journal=tmp_path / "j.jsonl")
    assert again.usage["requests"] == 0 and len(again.records) == 24  # nothing paid twice
    meta = write_splits(truth.records, d, tmp_path / "splits")
    assert meta["total_articles"] == 24 and meta["tiers"]["test"] == {"excellent": 2, "not_educational": 2}  # seed: 12 - int(10.8)


def test_max_documents_limits_oracle_calls(tmp_path):
    docs = [{"id": f"p{i}", "content": LONG} for i in range(30)]
    d = load_filter(_folder(tmp_path, docs))  # the shipped config labels 16; 10 here
    edit_config(d.folder, lambda c: c["oracle"].__setitem__("max_documents", 10))
    d = load_filter(d.folder)
    client = oracle_client(_answer)
    truth = gt.label(d, docs, client)
    assert len(client.provider.calls) == 10 and truth.selected == 10
    assert [r["id"] for r in truth.records] == [f"p{i}" for i in range(0, 30, 3)]


def test_labels_mode_uses_the_file_and_fills_content_from_documents(tmp_path):
    docs = [{"id": "a", "title": "A", "content": LONG}, {"id": "b", "title": "B", "content": LONG}]
    folder = _folder(tmp_path, docs)
    dims = load_filter(folder).dimensions
    (folder / "labels.jsonl").write_text(json.dumps({"id": "a", "scores": {k: 6 for k in dims}}) + "\n"
                                         + json.dumps({"id": "b", "scores": {k: 60 for k in dims}}) + "\n")
    edit_config(folder, lambda c: c.__setitem__("oracle", {"mode": "labels", "labels": "labels.jsonl"}))
    d = load_filter(folder)
    truth = gt.label(d, docs)
    assert [r["id"] for r in truth.records] == ["a"] and truth.records[0]["content"] == LONG
    assert truth.rejects[0]["where"].endswith("labels.jsonl:2:scores.knowledge_depth")


def test_agreement_of_two_oracles(tmp_path):
    docs = [{"id": f"d{i}", "title": f"t{i}", "content": LONG if i % 2 else "Other words here. " * 30}
            for i in range(10)]
    d = load_filter(_folder(tmp_path, docs))

    def two_models(messages, model, **_):
        reply = json.loads(_answer(messages))
        if model == "b":
            reply["clarity"] = 5
        return json.dumps(reply)

    labelled = gt.label(d, docs, oracle_client(two_models), model="a").records  # oracle A: the ground truth
    out = gt.oracle_agreement(d, labelled, oracle_client(two_models), model="b", provider="scripted", sample=10)
    assert out["compared"] is True and out["sample"] == 10 and out["oracle_b"] == {"provider": "scripted", "model": "b"}
    assert out["n"] == 10 and out["dimensions"]["knowledge_depth"]["pearson"] == 1.0
    assert out["dimensions"]["knowledge_depth"]["mae"] == 0.0
    assert out["dimensions"]["clarity"]["pearson"] is None and out["dimensions"]["clarity"]["mae"] == 3.0

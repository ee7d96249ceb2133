"""The users' feedback: the tutor CLI takes it (flags or prompts) and appends it with the session, the
tutor_feedback asset reads it, and kept, well-rated sessions become poet pairs in the next poet dataset. Also the
swapping option (one model held at a time, load times shown). Models are scripted chat callables."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import dagster as dg
import pytest

from distillery_assets.io import read_jsonl
from distillery_assets.poetry import feedback, tutor
from distillery_assets.poetry.feedback import FeedbackSettings, UserFeedback
from distillery_assets.poetry.session import Reply

POEM = "salt on the sill\nthe kettle ticks\na gull folds its wings\nthe ferry leans home"


class ScriptedChat:
    """A model: the educator briefs, then approves the first draft; the poet writes POEM. Tracks what is alive."""

    alive: set = set()

    def __init__(self, role, path):
        self.role, self.path = role, path
        ScriptedChat.alive.add(role)
        assert len(ScriptedChat.alive) <= 2

    def __call__(self, messages, sampling):
        assert self.role in ScriptedChat.alive
        if self.role == "poet":
            return Reply(POEM, "stop")
        user = messages[-1]["content"]
        if "generation brief" in user:
            return Reply("Write about a ferry: salt, gulls, four short lines.", "stop")
        if "Critique this draft" in user:
            return Reply('"the kettle ticks" works; this poem has found its shape.', "stop")
        return Reply("A short note: the gull carries it.", "stop")

    def close(self):
        ScriptedChat.alive.discard(self.role)


@pytest.fixture
def inputs(tmp_path, monkeypatch):
    root = tmp_path / "inputs"
    monkeypatch.setenv("DISTILLERY_INPUTS_DIR", str(root))
    return root


def _cli(tmp_path, request, *flags, ask=None, interactive=False):
    (tmp_path / "e.gguf").write_bytes(b"e")
    (tmp_path / "p.gguf").write_bytes(b"p")
    return tutor.main([request, "--educator", str(tmp_path / "e.gguf"), "--poet", str(tmp_path / "p.gguf"), *flags],
                      loader=ScriptedChat, ask=ask, interactive=interactive)


# ---- the file --------------------------------------------------------------------------------------------

def _session(request="Write about a ferry"):
    return {"user_request": request, "generation_brief": "a brief", "final_poem": POEM, "educator_note": "note",
            "revision_history": [], "metadata": {"revisions": 0, "model_educator": "e.gguf", "model_poet": "p.gguf"}}


def test_append_adds_one_line_per_session_keeping_old_bytes_and_read_names_bad_lines(tmp_path):
    path = tmp_path / "fb" / "feedback.jsonl"
    assert feedback.read_feedback(path) == ([], [])  # nobody has given feedback yet
    first = feedback.feedback_record(_session(), UserFeedback(5, True, True, "lovely"))
    assert feedback.append_feedback(path, first) == 1
    with open(path, "ab") as fh:  # a hand-edited line, then a torn one without its newline
        fh.write(b'{"timestamp": "2026-01-01T00:00:00+00:00", "user_feedback": {"rating": 9}}\n{"torn": ')
    second = feedback.feedback_record(_session("b"), UserFeedback(2, False))
    assert feedback.append_feedback(path, second) == 4
    lines = path.read_bytes().split(b"\n")
    assert json.loads(lines[0])["user_feedback"]["notes"] == "lovely" and lines[2] == b'{"torn": '
    entries, rejects = feedback.read_feedback(path)
    assert [e.line for e in entries] == [1, 4]
    assert [r.source for r in rejects] == ["feedback.jsonl:2", "feedback.jsonl:3"]
    assert "missing field" in rejects[0].reason and "malformed" in rejects[1].reason
    record = entries[0].record
    assert {"timestamp", "user_request", "final_poem", "educator_note", "generation_brief", "revision_count",
            "revision_history", "models", "user_feedback", "session"} <= set(record)
    assert record["user_feedback"] == {"rating": 5, "kept_poem": True, "educator_helpful": True, "notes": "lovely",
                                       "changes": ""}


def test_summary_and_poet_pairs_from_kept_well_rated_sessions(tmp_path):
    path = tmp_path / "feedback.jsonl"
    days = [datetime(2026, 12, d, tzinfo=timezone.utc) for d in (1, 1, 2, 3)]
    for (rating, kept), day in zip([(5, True), (3, True), (4, False), (4, True)], days):
        feedback.append_feedback(path, feedback.feedback_record(_session(f"r{rating}{kept}"),
                                                                UserFeedback(rating, kept), now=day))
    entries, rejects = feedback.read_feedback(path)
    assert not rejects
    summary = feedback.summarize(entries)
    assert summary["sessions"] == 4 and summary["mean_rating"] == 4.0 and summary["kept_rate"] == 0.75
    assert summary["by_day"][0] == {"day": "2026-12-01", "sessions": 2, "mean_rating": 4.0}
    assert summary["running_mean_rating"] == [5.0, 4.0, 4.0, 4.0]
    pairs, bad = feedback.poet_pairs(entries, FeedbackSettings(min_rating=4))
    assert [p["user_request"] for p in pairs] == ["r5True", "r4True"] and not bad
    assert pairs[0]["brief"] == "a brief" and pairs[0]["poem"] == POEM and pairs[0]["origin"] == "feedback"
    assert pairs[1]["source"] == "feedback.jsonl:4"


# ---- the CLI ----------------------------------------------------------------------------------------------

def test_three_sessions_with_feedback_given_as_flags(tmp_path, inputs, capsys):
    assert _cli(tmp_path, "Write about a ferry", "--rating", "5", "--kept", "--educator-helped", "--notes", "n1") == 0
    assert _cli(tmp_path, "Write about a heron", "--rating", "2", "--not-kept") == 0
    assert _cli(tmp_path, "Write about salt", "--rating", "4", "--kept", "--educator-not-helpful") == 0
    path = inputs / "poetry" / "feedback" / "feedback.jsonl"
    rows = read_jsonl(path)
    assert [r["user_request"] for r in rows] == ["Write about a ferry", "Write about a heron", "Write about salt"]
    assert [r["user_feedback"]["rating"] for r in rows] == [5, 2, 4]
    assert rows[2]["user_feedback"]["educator_helpful"] is False and rows[1]["user_feedback"]["kept_poem"] is False
    assert rows[0]["session"]["final_poem"] == POEM and rows[0]["models"] == {"educator": "e.gguf", "poet": "p.gguf"}
    assert "feedback recorded" in capsys.readouterr().err


def test_interactive_feedback_and_no_feedback_without_a_terminal(tmp_path, inputs, capsys):
    answers = iter(["7", "4", "maybe", "y", "", "the gull", ""])
    assert _cli(tmp_path, "Write about gulls", ask=lambda q: next(answers), interactive=True) == 0
    [row] = read_jsonl(inputs / "poetry" / "feedback" / "feedback.jsonl")
    assert row["user_feedback"] == {"rating": 4, "kept_poem": True, "educator_helpful": None, "notes": "the gull",
                                    "changes": ""}
    assert _cli(tmp_path, "Write about gulls", interactive=False) == 0
    assert "no feedback recorded" in capsys.readouterr().err
    assert len(read_jsonl(inputs / "poetry" / "feedback" / "feedback.jsonl")) == 1


def test_bad_feedback_flags_are_refused_before_the_session(tmp_path, inputs, capsys):
    assert _cli(tmp_path, "x", "--rating", "4") == 2
    assert "--kept or --not-kept" in capsys.readouterr().err
    assert _cli(tmp_path, "x", "--rating", "9", "--kept") == 2
    assert "outside 1..5" in capsys.readouterr().err
    assert not (inputs / "poetry" / "feedback" / "feedback.jsonl").exists()


def test_swap_holds_one_model_at_a_time_and_shows_every_load(tmp_path, inputs, capsys):
    ScriptedChat.alive = set()
    sessions = tutor.run_sessions(["a", "b"], tmp_path / "e.gguf", tmp_path / "p.gguf", swap=True,
                                  loader=lambda role, path: _Single(role, path))
    first = sessions[0]["metadata"]
    # brief (educator), draft (poet), critique + note (educator): three loads, one model alive at any time
    assert [x["model"] for x in first["model_loads"]] == ["educator", "poet", "educator"] and first["swap"]
    # the second session starts on the educator still held from the first
    assert [x["model"] for x in sessions[1]["metadata"]["model_loads"]] == ["poet", "educator"]
    held = tutor.run_sessions(["a", "b"], tmp_path / "e.gguf", tmp_path / "p.gguf", loader=ScriptedChat)
    assert [x["model"] for x in held[0]["metadata"]["model_loads"]] == ["educator", "poet"]
    assert held[1]["metadata"]["model_loads"] == []  # both stayed loaded
    assert _cli(tmp_path, "Write about a ferry", "--swap", "--no-feedback") == 0
    out = capsys.readouterr().out
    assert "model loads (one model at a time): educator" in out and "total" in out


class _Single(ScriptedChat):
    def __init__(self, role, path):
        assert not ScriptedChat.alive, f"{role} loaded while {ScriptedChat.alive} is held"
        super().__init__(role, path)


# ---- the asset and the poet dataset -----------------------------------------------------------------------

def test_tutor_feedback_asset_and_kept_poems_in_the_poet_dataset(tmp_path, inputs, data_dir):
    from assets import poetry
    from distillery_assets.poetry.datasets import build_role_dataset
    from distillery_assets.poetry.settings import PoetryConfig
    from tests.unit.test_asset_presentation import assert_rendered

    for request, flags in [("Write about a ferry", ["--rating", "5", "--kept"]),
                           ("Write about a heron", ["--rating", "3", "--kept"]),
                           ("Write about salt", ["--rating", "4", "--not-kept"])]:
        assert _cli(tmp_path, request, *flags) == 0
    result = dg.materialize([poetry.tutor_feedback])
    assert result.success
    [mat] = [e.event_specific_data.materialization for e in result.get_asset_materialization_events()]
    meta = mat.metadata
    assert meta["sessions"].value == 3 and meta["poet_pairs"].value == 1 and meta["kept_rate"].value == 0.667
    assert meta["mean_rating"].value == 4.0 and any(
        str(i).endswith("feedback/feedback.jsonl") for i in meta["inputs"].value)
    assert_rendered({"tutor_feedback": meta})
    pairs = read_jsonl(data_dir / "poetry" / "feedback" / "poet_pairs.jsonl")
    assert [p["user_request"] for p in pairs] == ["Write about a ferry"]

    generated = tmp_path / "poet_pair.jsonl"
    generated.write_text("".join(json.dumps({"user_request": f"r{i}", "brief": f"brief number {i} about the sea",
                                             "poem": POEM.replace("salt", f"salt {i}")}) + "\n" for i in range(12)))
    ds = build_role_dataset(PoetryConfig(), "poet", {"poet_pair": [generated, data_dir / "poetry" / "feedback" /
                                                                   "poet_pairs.jsonl"]})
    assert ds.per_task["poet_pair"]["records_per_file"] == {"poet_pair.jsonl": 12, "poet_pairs.jsonl": 1}
    texts = [m["content"] for ex in ds.train + ds.valid for m in ex["messages"]]
    assert POEM in texts and "Write about a ferry: salt, gulls, four short lines." in texts


def test_poet_dataset_reads_tutor_feedback_so_lineage_reaches_the_feedback_file():
    from assets import finetune, poetry

    graph = dg.Definitions.merge(poetry.defs, finetune.defs, dg.Definitions(resources={
        k: dg.ResourceDefinition.none_resource() for k in ("llm", "catalog", "compute", "hub")})).resolve_asset_graph()
    parents = {k.to_user_string() for k in graph.get(dg.AssetKey("poet_train")).parent_keys}
    assert parents == {"poetry_poet_pairs", "tutor_feedback"}

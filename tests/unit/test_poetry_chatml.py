import pytest

from distillery_assets.poetry import chatml


def _ex(i):
    return {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": f"u{i}"},
                         {"role": "assistant", "content": f"a{i}"}]}


def test_task_mappings_and_empty_turns_skipped():
    recs = [{"poem": {"text": "P"}, "critique": "C"}, {"poem": {"text": "P2"}, "critique": " "}]
    ex = chatml.to_examples("critique", recs, "SYS")
    assert ex == [{"messages": [{"role": "system", "content": "SYS"}, {"role": "user", "content": "P"},
                                {"role": "assistant", "content": "C"}]}]
    u, a = chatml.user_assistant("comparison", {"poem_a": {"text": "A"}, "poem_b": {"text": "B"}, "comparison": "X"})
    assert u.startswith("Poem A:\n---\nA\n---") and "Poem B:\n---\nB" in u and a == "X"
    u, a = chatml.user_assistant("dialogue", {"poem": {"text": "P"}, "critique": "C", "revision": "R", "follow_up": "F"})
    assert "Their revision:\n---\nR\n---" in u and a == "F"
    assert chatml.user_assistant("poet_pair", {"brief": "B", "poem": "P"}) == ("B", "P")


def test_split_is_seeded_disjoint_and_sized():
    exs = [_ex(i) for i in range(30)]
    train, valid = chatml.split(exs, seed=42, valid_fraction=0.1)
    assert (len(train), len(valid)) == (27, 3)
    assert chatml.split(exs, seed=42) == (train, valid)
    assert chatml.split(exs, seed=7) != (train, valid)
    assert chatml.overlap(train, valid) == 0
    t, v = chatml.split(exs, max_samples=10)
    assert (len(t), len(v)) == (10, 2)
    assert [len(x) for x in chatml.split(exs[:2])] == [1, 1]
    with pytest.raises(chatml.DatasetTooSmall):
        chatml.split(exs[:1])


def test_dedupe_and_checks():
    exs, removed = chatml.dedupe([_ex(1), _ex(1), _ex(2)])
    assert removed == 1 and len(exs) == 2
    bad = [_ex(1), _ex(1), {"messages": [{"role": "user", "content": "x"}] * 3},
           {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": ""},
                         {"role": "assistant", "content": "a"}]}, {"text": "no messages"}]
    rep = chatml.check_examples(bad, max_seq=10, count_tokens=lambda s: len(s), where="train.jsonl")
    assert rep.duplicates == 1 and not rep.ok
    assert "train.jsonl line 3: turn 0 must have role 'system'" in rep.problems
    assert "train.jsonl line 4: user turn is empty" in rep.problems
    assert "train.jsonl line 5: 'messages' must be a list of 3 turns" in rep.problems
    good = chatml.check_examples([_ex(1), _ex(22)], max_seq=18, count_tokens=len)
    assert good.ok and good.max_tokens == 19 and good.over_length == 1  # 1+3+3 content + 3x4 overhead

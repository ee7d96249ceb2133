import pytest

from distillery_assets.llm.cache import ResponseCache

KEY = "ab" + "0" * 62


def test_put_then_get_round_trips_and_is_sharded(tmp_path):
    cache = ResponseCache(tmp_path)
    assert cache.get(KEY) is None
    cache.put(KEY, {"text": "héllo", "input_tokens": 3})
    assert cache.get(KEY) == {"text": "héllo", "input_tokens": 3}
    assert cache.path(KEY) == tmp_path / "ab" / f"{KEY}.json"
    assert not [p for p in (tmp_path / "ab").iterdir() if p.name.startswith(".tmp-")]


def test_corrupt_entry_is_a_miss(tmp_path):
    cache = ResponseCache(tmp_path)
    cache.path(KEY).parent.mkdir(parents=True)
    cache.path(KEY).write_text('{"text": "cut of', encoding="utf-8")
    assert cache.get(KEY) is None


@pytest.mark.parametrize("bad", ["../../etc/passwd", "AB" + "0" * 62, "abc"])
def test_only_sha256_keys_become_paths(tmp_path, bad):
    with pytest.raises(ValueError, match="sha256"):
        ResponseCache(tmp_path).path(bad)

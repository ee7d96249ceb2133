"""Under 30% injected faults (429, 500, a hung request, malformed JSON, a reply cut at max_tokens), every item
ends as a whole result or a named failure: no truncated document on disk, nothing paid twice, nothing lost;
the next run asks for exactly the failures. A corpus partition and a theme ChatML set, through the real LLM
resource against the loopback OpenAI-compatible server."""

import json
import random

import dagster as dg
import pytest

from assets import corpus, theme
from distillery_assets.catalog import Catalog
from distillery_assets.corpus.generate import SYSTEM_PROMPT
from resources.catalog import CatalogResource
from resources.llm import LLMResource
from tests.support.fakeapi.openai_compat import serve_openai_compat
from tests.support.fakeapi.replies import default_reply

pytestmark = pytest.mark.e2e

# "garbage": an HTTP body that is not JSON at all; "malformed": a reply whose text is not the JSON asked for
# (a fault only for JSON tasks: for plain text it is just an answer)
TEXT_FAULTS = [("429", 0), ("500",), ("timeout", 2.0), ("garbage",), ("length",)]
JSON_FAULTS = TEXT_FAULTS + [("malformed",)]


def fault_script(n: int, faults: list, rate: float = 0.3, seed: int = 7) -> list[tuple]:
    rng = random.Random(seed)
    return [rng.choice(faults) if rng.random() < rate else ("ok",) for _ in range(n)]


def llm_resource(srv, concurrency: int = 6) -> LLMResource:
    # two attempts per call and a 0.5 s timeout: some faults land twice in a row and stay failures
    return LLMResource(provider="openai", base_url=srv.base_url, concurrency=concurrency, max_attempts=2, timeout_s=0.5,
                       backoff_s=0.01, json_reasks=1, length_retries=1, api_key_env="DISTILLERY_TEST_UNSET_KEY",
                       catalog=CatalogResource())


def paid_twice(data_dir) -> list:
    """Request keys answered successfully by the provider more than once (each must be paid for once)."""
    return Catalog(data_dir / "catalog.duckdb").query(
        "select request_key, count(*) as n from llm_calls where ok and not cached group by 1 having count(*) > 1")


def _meta(result, node):
    return {k: v.value for k, v in result.asset_materializations_for_node(node)[0].metadata.items()}


def _prompts(srv, start: int) -> list[str]:
    return [r["body"]["messages"][-1]["content"] for r in srv.requests[start:]]


def test_corpus_partition_under_faults(data_dir):
    groups = corpus.story_group_partitions.get_partition_keys()
    tags = {"dagster/asset_partition_range_start": groups[0], "dagster/asset_partition_range_end": groups[-1]}
    run_config = {"ops": {"story_corpus": {"config": {"limit": None}}}}
    with serve_openai_compat(latency_s=0.02, script=fault_script(200, TEXT_FAULTS)) as srv:
        llm = llm_resource(srv)
        assert dg.materialize([corpus.story_prompts], resources={"llm": llm, "catalog": CatalogResource()},
                              tags=tags).success
        first = dg.materialize([corpus.story_corpus], resources={"llm": llm, "catalog": CatalogResource()},
                               tags=tags, run_config=run_config, raise_on_error=False)
        meta = _meta(first, "story_corpus")
        assert meta["generated"] + meta["failed"] == 50 and meta["failed"] > 0, meta  # each: a file or a failure
        failed = meta["failures"]
        assert all(reason for reason in failed.values())  # every failure named, with its reason
        files = sorted((data_dir / "corpus").rglob("*.corpus"))
        assert len(files) == meta["generated"]
        for path in files:  # whole answers only: the server's full reply for that prompt, never a cut-off one
            prompt = next(line.split(" ", 1)[1] for line in (path.parent / "prompts.txt").read_text().splitlines()
                          if line.split(" ", 1)[0] == path.name)
            whole = default_reply([{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": prompt}], {})
            assert path.read_text() == whole + "\n", path
        assert paid_twice(data_dir) == []

        before = srv.request_count
        second = dg.materialize([corpus.story_corpus], resources={"llm": llm, "catalog": CatalogResource()},
                                tags=tags, run_config=run_config, raise_on_error=False)
        again = _meta(second, "story_corpus")
        asked = set(_prompts(srv, before))
        wanted = {next(line.split(" ", 1)[1] for line in (data_dir / "corpus" / name).parent.joinpath(
            "prompts.txt").read_text().splitlines() if line.split(" ", 1)[0] == (data_dir / "corpus" / name).name)
            for name in failed}
        assert asked == wanted  # exactly the failures were asked again, nothing that had succeeded
        assert again["generated"] + again["failed"] == len(failed) and again["skipped_existing"] == meta["generated"]
        assert paid_twice(data_dir) == []


THEME_ASSETS = [theme.gutenberg_books, theme.gutenberg_chunks, theme.theme_chunks, theme.theme_chatml,
                theme.theme_chatml_every_chunk_answered]


def _exchange(messages, body):
    topic = messages[-1]["content"].rsplit("TOPIC OF THE QUESTION:", 1)[-1].strip()
    tag = abs(hash((messages[-1]["content"], body.get("seed")))) % 10**8
    return json.dumps({
        "user": f"Comrade machine, what should passage {tag} teach us about {topic}?",
        "assistant": ("As in a chess game, the collective of the colony must weigh science and power before "
                      f"each move; patience and shared labour decide the outcome. [{tag}]"),
    })


def test_theme_chatml_under_faults(data_dir):
    run_config = {"ops": {"theme_chatml": {"config": {"max_chunks": 8, "examples_per_chunk": 2}}}}
    # one request at a time: the fault script meets the requests in a fixed order, so the run is reproducible
    resources = lambda srv: {"llm": llm_resource(srv, concurrency=1), "catalog": CatalogResource()}  # noqa: E731
    with serve_openai_compat(latency_s=0.02, reply=_exchange,
                             script=fault_script(60, JSON_FAULTS, rate=0.45, seed=11)) as srv:
        first = dg.materialize(THEME_ASSETS, resources=resources(srv), run_config=run_config, raise_on_error=False)
        stats = json.loads((data_dir / "theme" / "theme_chatml.stats.json").read_text())
        journal = next((data_dir / "theme" / "chatml_work").glob("*/journal.jsonl"))
        entries = [json.loads(line) for line in journal.read_text().splitlines()]
        finished = {e["key"] for e in entries}
        # some rows had no usable answer in two tries: the rest is written, the failures are named and warned of
        assert stats["chunks_failed"] > 0 and first.success
        [check] = first.get_asset_check_evaluations()
        assert check.check_name == "theme_chatml_every_chunk_answered" and not check.passed
        assert check.severity == dg.AssetCheckSeverity.WARN
        assert check.metadata["chunks_failed"].value == stats["chunks_failed"]
        written = [json.loads(line) for line in (data_dir / "theme" / "theme_chatml.jsonl").read_text().splitlines()]
        assert written and all(e["messages"][2]["content"].endswith("]") for e in written)  # whole exchanges only
        # every journalled row is a whole exchange or a content reject; failures were not journalled
        for e in entries:
            assert ("record" in e) != ("reject" in e)
            if "record" in e:
                assert e["record"]["messages"][2]["content"].endswith("]")
        assert len(finished) + len(stats["failures"]) == 16  # 8 chunks x 2: each row journalled or a named failure
        assert paid_twice(data_dir) == []

        runs = 1
        while True:
            before = srv.request_count
            result = dg.materialize(THEME_ASSETS, resources=resources(srv), run_config=run_config,
                                    raise_on_error=False)
            runs += 1
            new_keys = {json.loads(line)["key"] for line in journal.read_text().splitlines()} - finished
            first_asks = {(r["body"]["messages"][-1]["content"], r["body"].get("seed")) for r in srv.requests[before:]
                          if len(r["body"]["messages"]) == 2}
            assert len(first_asks) == 16 - len(finished)  # exactly the unfinished rows asked again, none twice
            finished |= new_keys
            assert result.success
            stats = json.loads((data_dir / "theme" / "theme_chatml.stats.json").read_text())
            if stats["chunks_failed"] == 0 or runs > 5:
                break
        assert stats["chunks_failed"] == 0 and len(finished) == 16
        assert [c.passed for c in result.get_asset_check_evaluations()] == [True]
        examples = [json.loads(line) for line in (data_dir / "theme" / "theme_chatml.jsonl").read_text().splitlines()]
        assert examples and all(e["messages"][2]["content"].endswith("]") for e in examples)
        assert paid_twice(data_dir) == []

"""prompts.txt line by line, through the real corpus asset (the real LLM client over a scripted provider): an odd
line (a name too long for the filesystem, a hidden name, a tab separator) is one reject naming its file and line
while the good lines beside it are generated, in every partition of a range; a UTF-8 byte-order mark is removed
with a warning naming the file. The prompt tables refuse the names such a line would be rejected for."""

from pathlib import Path

import dagster as dg
import pytest
import yaml

from assets import corpus
from distillery_assets.corpus.plan import scan_partition
from distillery_assets.corpus.tables import PromptTablesError, default_tables_path, load_tables
from distillery_assets.llm.providers.base import ProviderReply
from resources.catalog import CatalogResource
from tests.support.llm import scripted_llm

GOOD = "good_one.corpus Write about the number zero.\ngood_two.corpus Write about prime numbers.\n"


def _llm():
    return scripted_llm(lambda messages, **_: ProviderReply(f"A passage about {messages[-1].content}", "stop", 3, 7))


def _leaf(data_dir: Path, category: str, text: str | bytes, sub: str = "algebra") -> Path:
    """A hand-written prompts.txt (the corpus asset needs no prompts asset run for it)."""
    prompts = data_dir / "corpus" / "encyclopedia" / category / sub / "prompts.txt"
    prompts.parent.mkdir(parents=True, exist_ok=True)
    (prompts.write_bytes if isinstance(text, bytes) else prompts.write_text)(text)
    return prompts


def _generate(instance, *, partition=None, start=None, end=None):
    tags = {"dagster/asset_partition_range_start": start, "dagster/asset_partition_range_end": end} if start else None
    return dg.materialize([corpus.encyclopedia_corpus], partition_key=partition, tags=tags, instance=instance,
                          resources={"llm": _llm(), "catalog": CatalogResource()},
                          run_config={"ops": {"encyclopedia_corpus": {"config": {"limit": None}}}},
                          raise_on_error=False)


def _meta(result) -> dict:
    """The run's metadata (a range's run reports the same on each partition it materializes)."""
    mat = result.asset_materializations_for_node("encyclopedia_corpus")[0]
    return {k: v.value for k, v in mat.metadata.items()}


def _corpus_files(prompts: Path) -> list[str]:
    return sorted(p.name for p in prompts.parent.iterdir() if p.name.endswith(".corpus"))


def _reason(reject: str, prompts: Path) -> str:
    return reject.removeprefix(f"{prompts} line 2: ")  # the path holds the test's name, so judge the reason alone


def _one_odd_line(data_dir: Path, odd: str) -> tuple[Path, dict, list[str]]:
    """The odd line between two good ones; the run's metadata and the files beside the prompts.txt."""
    first, second = GOOD.splitlines(keepends=True)
    prompts = _leaf(data_dir, "mathematics", first + odd + "\n" + second)
    with dg.instance_for_test() as instance:
        result = _generate(instance, partition="mathematics")
        assert result.success, result.failure_data_for_node("encyclopedia_corpus")
    return prompts, _meta(result), _corpus_files(prompts)


def test_a_name_too_long_for_the_filesystem_is_one_reject_and_the_rest_is_generated(data_dir):
    prompts, meta, files = _one_odd_line(data_dir, "a" * 300 + ".corpus Write about very long names.")
    assert files == ["good_one.corpus", "good_two.corpus"]
    assert (meta["generated"], meta["rejected_lines"], meta["failed"]) == (2, 1, 0)
    [reject] = meta["rejects"]
    assert reject.startswith(f"{prompts} line 2: ")
    assert "too long for the filesystem" in _reason(reject, prompts)


def test_a_hidden_name_is_one_reject_and_the_rest_is_generated(data_dir):
    prompts, meta, files = _one_odd_line(data_dir, "..dotdot.corpus Write about hidden files.")
    assert files == ["good_one.corpus", "good_two.corpus"]  # no ..dotdot.corpus
    assert (meta["generated"], meta["rejected_lines"]) == (2, 1)
    [reject] = meta["rejects"]
    assert reject.startswith(f"{prompts} line 2: ") and "hidden" in _reason(reject, prompts)


def test_a_tab_separator_is_one_reject_that_says_separator(data_dir):
    prompts, meta, files = _one_odd_line(data_dir, "tabbed.corpus\tWrite about tabs and spaces.")
    assert files == ["good_one.corpus", "good_two.corpus"]
    assert (meta["generated"], meta["rejected_lines"]) == (2, 1)
    [reject] = meta["rejects"]
    assert reject.startswith(f"{prompts} line 2: ")
    reason = _reason(reject, prompts)
    assert "separator" in reason and "tab" in reason and "does not end in" not in reason


def test_a_byte_order_mark_is_removed_with_a_warning_naming_the_file(data_dir):
    prompts = _leaf(data_dir, "mathematics", "\ufeff".encode() + GOOD.encode())
    with dg.instance_for_test() as instance:
        result = _generate(instance, partition="mathematics")
        assert result.success
        messages = [e.user_message for e in instance.all_logs(result.run_id) if e.user_message]
    assert _corpus_files(prompts) == ["good_one.corpus", "good_two.corpus"]  # not "\ufeffgood_one.corpus"
    assert (_meta(result)["generated"], _meta(result)["rejected_lines"]) == (2, 0)
    assert any(str(prompts) in m and "byte-order mark" in m for m in messages)
    again = scan_partition(prompts.parent.parent)  # the next run: both files are there, nothing to make twice
    assert again.pending == [] and [t.file for t in again.existing] == ["good_one.corpus", "good_two.corpus"]


def test_an_odd_line_in_one_category_stops_no_category_of_the_range(data_dir):
    bad = _leaf(data_dir, "arts", "b" * 300 + ".corpus Too long.\n" + GOOD, sub="painting")
    good = _leaf(data_dir, "geography", GOOD, sub="rivers")
    with dg.instance_for_test() as instance:
        result = _generate(instance, start="arts", end="geography")
        assert result.success
    assert sorted(m.partition for m in result.asset_materializations_for_node("encyclopedia_corpus")) == [
        "arts", "geography"]
    meta = _meta(result)
    assert (meta["generated"], meta["rejected_lines"]) == (4, 1)
    assert meta["rejects"][0].startswith(f"{bad} line 1: ")
    assert _corpus_files(bad) == _corpus_files(good) == ["good_one.corpus", "good_two.corpus"]


@pytest.mark.parametrize("mutate, fragment", [
    (lambda r: r["story_groups"]["200-400w"]["prompts"][0].update(file="k" * 210 + ".corpus"),
     "is 217 characters long, at most 207"),
    (lambda r: r["story_groups"]["200-400w"]["prompts"][0].update(file="nul.corpus"), "reserved device name"),
    (lambda r: r["encyclopedia"]["science"].append("s" * 190), "makes file names of"),
])
def test_the_tables_refuse_file_names_a_prompts_line_would_be_rejected_for(tmp_path, mutate, fragment):
    raw = yaml.safe_load(default_tables_path().read_text())
    mutate(raw)
    path = tmp_path / "tables.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(PromptTablesError) as err:
        load_tables(path)
    assert str(path) in str(err.value) and fragment in str(err.value)

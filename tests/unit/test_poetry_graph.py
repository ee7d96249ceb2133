"""Shape of the poetry graph once the fine-tune factory is present."""

import dagster as dg
import pytest

from dagster._core.definitions.asset_selection import AssetSelection

from assets import finetune, poetry


@pytest.fixture(scope="module")
def graph():
    placeholders = {k: dg.ResourceDefinition.none_resource() for k in ("llm", "catalog", "compute", "hub")}
    return dg.Definitions.merge(poetry.defs, finetune.defs, dg.Definitions(resources=placeholders)).resolve_asset_graph()


def _select(graph, text):
    return {k.to_user_string() for k in AssetSelection.from_string(text).resolve(graph)}


def test_all_ancestors_of_each_gguf_are_the_whole_chain(graph):
    assert _select(graph, "*poet_gguf") == {"base_model", "poet_gguf", "poet_lora", "poet_train", "poet_val",
                                            "poetry_briefs", "poetry_poet_pairs", "tutor_feedback"}
    assert {k.to_user_string() for k in dg.AssetSelection.assets("poet_gguf").upstream().resolve(graph)} == _select(
        graph, "*poet_gguf")
    educator = _select(graph, "*educator_gguf")
    assert {"poetry_good_poems", "poetry_bad_poems", "poetry_critiques", "poetry_dialogues", "poetry_lessons",
            "educator_train", "educator_val", "educator_lora", "base_model"} <= educator
    assert "poetry_poet_pairs" not in educator


def test_the_graph_has_only_data_dependencies(graph):
    # one layer up is what each asset reads; the raw data is reached through the chain, not by extra deps
    def parents(key):
        return {k.to_user_string() for k in graph.get(dg.AssetKey(key)).parent_keys}

    assert "poetry_briefs" not in _select(graph, "+poet_gguf")
    assert parents("poet_lora") == {"base_model", "poet_train", "poet_val"}
    assert not parents("poet_gguf") & {"poetry_briefs", "poetry_poet_pairs", "poet_train"}
    assert not parents("educator_gguf") & {"poetry_good_poems", "poetry_bad_poems", "poetry_critiques"}


def test_sample_sessions_read_both_gguf_files(graph):
    parents = {k.to_user_string() for k in graph.get(dg.AssetKey("poetry_sample_sessions")).parent_keys}
    assert parents == {"educator_gguf", "poet_gguf"}

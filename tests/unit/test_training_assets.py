"""The fine-tune factory's shape: keys, dependencies, checks, and one shared base_model for many roles."""

import json

import dagster as dg

from assets.finetune import FinetuneChain, _chat_messages, base_model, finetune_chain


def _chains():
    return [*finetune_chain(FinetuneChain(name="educator", train_asset="educator_train", val_asset="educator_val",
                                          group="poetry", config_file="educator.yaml", lora_asset="educator_lora",
                                          gguf_asset="educator_gguf", upload_asset="educator_gguf_upload")),
            *finetune_chain(FinetuneChain(name="poet", train_asset="poet_train", val_asset="poet_val",
                                          group="poetry", config_file="poet.yaml", lora_asset="poet_lora",
                                          gguf_asset="poet_gguf", upload_asset="poet_gguf_upload"))]


def test_each_role_gets_lora_gguf_upload_and_three_checks_sharing_one_base():
    @dg.asset(name="educator_train")
    def et(): ...

    @dg.asset(name="educator_val")
    def ev(): ...

    @dg.asset(name="poet_train")
    def pt(): ...

    @dg.asset(name="poet_val")
    def pv(): ...

    from resources.catalog import CatalogResource
    from resources.compute import ComputeResource
    from resources.hub import HubResource

    defs = dg.Definitions(assets=[base_model, et, ev, pt, pv, *_chains()],
                          resources={"compute": ComputeResource(), "catalog": CatalogResource(), "hub": HubResource()})
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    for role in ("educator", "poet"):
        assert {f"{role}_lora", f"{role}_gguf", f"{role}_gguf_upload"} <= keys
        parents = {k.to_user_string() for k in graph.get(dg.AssetKey(f"{role}_lora")).parent_keys}
        assert parents == {f"{role}_train", f"{role}_val", "base_model"}
        assert {k.to_user_string() for k in graph.get(dg.AssetKey(f"{role}_gguf_upload")).parent_keys} >= {
            f"{role}_gguf"}
    checks = {(c.asset_key.to_user_string(), c.name) for c in graph.asset_check_keys}
    assert ("poet_lora", "trained_val_loss_below_base") in checks
    assert ("poet_gguf", "ppl_degradation_within_limit") in checks
    assert ("educator_gguf", "chat_reply_ends_on_end_of_turn") in checks


def test_chat_probe_is_the_first_valid_validation_conversation_without_its_reply(tmp_path):
    val = tmp_path / "val.jsonl"
    good = {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"},
                         {"role": "assistant", "content": "A"}]}
    val.write_text("{broken\n" + json.dumps({"messages": []}) + "\n" + json.dumps(good) + "\n")
    assert _chat_messages(val) == good["messages"][:2]


def test_chain_is_a_frozen_dataclass_and_checks_ride_on_their_assets():
    import dataclasses

    chain = FinetuneChain(name="poet", train_asset="poet_train", val_asset="poet_val", group="poetry",
                          config_file="poet.yaml", lora_asset="poet_lora",
                          gguf_asset="poet_gguf", upload_asset="poet_gguf_upload")
    try:
        chain.name = "other"  # type: ignore[misc]
    except dataclasses.FrozenInstanceError:
        pass
    else:
        raise AssertionError("FinetuneChain must be frozen")
    lora, gguf, upload = finetune_chain(chain)
    assert {k.name for k in lora.check_keys} == {"trained_val_loss_below_base"}
    assert {k.name for k in gguf.check_keys} == {"ppl_degradation_within_limit", "chat_reply_ends_on_end_of_turn"}
    assert not upload.check_keys
    # the resources each asset takes as typed parameters (io_manager is Dagster's own)
    assert lora.required_resource_keys - {"io_manager"} == {"compute", "catalog"}
    assert gguf.required_resource_keys - {"io_manager"} == {"compute", "catalog"}
    assert upload.required_resource_keys - {"io_manager"} == {"hub", "catalog"}  # catalog: the upload's sha256 row


def test_chat_probe_is_the_validation_conversation_with_the_shortest_reply(tmp_path):
    import json

    from assets.finetune import _chat_messages

    def record(user, reply):
        return {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": user},
                             {"role": "assistant", "content": reply}]}

    val = tmp_path / "valid.jsonl"
    val.write_text("\n".join(json.dumps(r) for r in [record("long", "x" * 900), record("short", "a poem"),
                                                       {"messages": []}]) + "\n")
    assert _chat_messages(val) == [{"role": "system", "content": "S"}, {"role": "user", "content": "short"}]


def test_the_poetry_chains_read_their_held_out_text_without_its_comment_header():
    from assets.finetune import FinetuneChain

    chain = FinetuneChain(name="poet", train_asset="poet_train", val_asset="poet_val", group="poetry",
                          config_file="poet.yaml", lora_asset="poet_lora",
                          gguf_asset="poet_gguf", upload_asset="poet_gguf_upload")
    held = chain.heldout(chain.config("cpu_small"))
    assert held.name == "training/heldout/poetry_teaching.txt" and not held.text.startswith("#")
    assert len(held.text.split()) > 2000


def test_lora_without_the_base_checkpoint_fails_naming_base_model(data_dir):
    from io_managers.files import DistilleryIOManager
    from resources.catalog import CatalogResource
    from resources.compute import ComputeResource

    record = {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"},
                           {"role": "assistant", "content": "A poem"}]}
    for name in ("train", "valid"):
        (data_dir / f"{name}.jsonl").write_text(json.dumps(record) + "\n")

    @dg.asset(name="poet_train")
    def pt():
        return data_dir / "train.jsonl"

    @dg.asset(name="poet_val")
    def pv():
        return data_dir / "valid.jsonl"

    lora, _, _ = finetune_chain(FinetuneChain(name="poet", train_asset="poet_train", val_asset="poet_val",
                                              group="poetry", config_file="poet.yaml", lora_asset="poet_lora",
                                              gguf_asset="poet_gguf", upload_asset="poet_gguf_upload"))
    catalog = CatalogResource()
    result = dg.materialize([pt, pv, lora], raise_on_error=False, selection=["poet_train", "poet_val", "poet_lora"],
                            resources={"compute": ComputeResource(), "catalog": catalog,
                                       "io_manager": DistilleryIOManager(catalog=catalog)})
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    message = failure.step_failure_data.error.message
    assert "base checkpoint" in message and "base_model" in message and "'*poet_lora'" in message
    assert not (data_dir / "models" / "lora").exists()  # nothing trained, nothing half-written


def test_chain_asset_names_must_follow_the_role():
    import pytest

    with pytest.raises(ValueError, match="asset names"):
        FinetuneChain(name="poet", train_asset="poet_train", val_asset="poet_val", group="poetry",
                      config_file="poet.yaml", lora_asset="poet_lora", gguf_asset="educator_gguf",
                      upload_asset="poet_gguf_upload")

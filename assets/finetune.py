"""Fine-tune chains: ``<role>_lora`` -> ``<role>_gguf`` -> ``<role>_gguf_upload``, one factory for every role.

Like Dagster's ``project_dagster_modal_pipes`` feed factory: the poetry pipeline calls
``finetune_chain("educator", ...)`` and ``finetune_chain("poet", ...)``, the theme pipeline
``finetune_chain("theme", ...)``. The shared ``base_model`` asset (the float32 SmolLM2 checkpoint)
lives in this module's ``defs`` once.

The heavy work runs through the ``compute`` resource (``run_step``: in process here, or on a Modal
GPU) using ``distillery_assets.training.steps``; the assets only build specs, record the run in the
catalogue, and publish metadata. Resource keys used: ``compute``, ``catalog``, ``hub``.
"""


import json
from pathlib import Path
from typing import Any

import dagster as dg

from assets.pools import LOCAL_MODEL_POOL

from distillery_assets.paths import config_dir, data_dir, safe_child
from distillery_assets.training.base_model import EMBEDDED_BASE_RELDIR, build_embedded_base, embedded_base_dir
from distillery_assets.training.config import PROFILE_ENV, TrainConfig, load_train_config
from distillery_assets.training.export import gguf_file_name
from distillery_assets.training.report import loss_table_md, model_card, save_loss_plot

BASE_GROUP = "models"
CHAT_PROBE = "Introduce yourself in one sentence."  # used only when no validation record is usable


class FinetuneConfig(dg.Config):
    profile: str | None = None
    """Training profile in the role's YAML (``full`` | ``cpu_small``); empty: $DISTILLERY_TRAIN_PROFILE or cpu_small."""
    hub_repo_id: str | None = None
    """Hub repository for the GGUF upload; empty: ``distillery-<role>-gguf`` under the token's namespace."""


@dg.asset(group_name=BASE_GROUP, kinds={"pytorch"}, pool=LOCAL_MODEL_POOL,
          description="Full-precision SmolLM2-135M-Instruct checkpoint, de-quantized once from the bundled GGUF; "
                      "the offline base for every LoRA (real runs name a Hugging Face model id instead).")
def base_model(context: dg.AssetExecutionContext) -> dg.Output:
    info = build_embedded_base(embedded_base_dir(data_dir()))
    folder = embedded_base_dir(data_dir())
    return dg.Output(folder, metadata={
        "path": dg.MetadataValue.path(str(folder)),
        "parameters": info["parameters"],
        "dtype": info["dtype"],
        "source": info["source_gguf"],
        "end_of_turn_token": info["end_of_turn_token"],
        "reused_existing": info["reused"],
        "note": info["note"],
    })


def _rel(path: Path) -> str:
    root = data_dir()
    try:
        return str(Path(path).resolve().relative_to(root))
    except ValueError as exc:
        raise ValueError(f"{path} is not under the data directory {root}; steps take paths relative to it") from exc


def _load_cfg(config_file: str, profile: str | None) -> TrainConfig:
    return load_train_config(safe_child(config_dir() / "training", config_file, source="finetune_chain config_file"),
                             profile)


def _ran_on(compute: Any, device: str) -> str:
    backend = getattr(compute, "backend", "local")
    where = "modal" if backend == "modal" else "local"
    return f"{where} {'GPU' if device == 'cuda' else 'CPU'}"


def _chat_messages(val_file: Path) -> list[dict[str, str]]:
    """The chat probe: the first usable validation conversation up to (not including) its last reply."""
    from distillery_assets.io import iter_jsonl
    from distillery_assets.training.chat_data import validate_messages

    for _, record in iter_jsonl(val_file, on_error="yield"):
        if isinstance(record, dict):
            try:
                return validate_messages(record)[:-1]
            except ValueError:
                continue
    return [{"role": "user", "content": CHAT_PROBE}]


def finetune_chain(role: str, *, train_asset: str, val_asset: str, group: str, config_file: str,
                   ) -> list[dg.AssetsDefinition | dg.AssetChecksDefinition]:
    """``<role>_lora``, ``<role>_gguf``, ``<role>_gguf_upload`` and their checks."""
    lora_key, gguf_key, upload_key = f"{role}_lora", f"{role}_gguf", f"{role}_gguf_upload"

    def adapter_rel(cfg: TrainConfig) -> str:  # one folder per profile: switching profiles keeps both runs
        return f"models/lora/{role}/{cfg.profile}"

    def gguf_rel(cfg: TrainConfig) -> str:
        return f"models/gguf/{role}/{cfg.profile}"

    @dg.asset(name=lora_key, group_name=group, kinds={"pytorch"}, pool=LOCAL_MODEL_POOL,
              ins={"train": dg.AssetIn(train_asset), "val": dg.AssetIn(val_asset)}, deps=[base_model],
              required_resource_keys={"compute", "catalog"},
              description=f"LoRA adapter for the {role} role (settings: data/config/training/{config_file}).")
    def lora(context: dg.AssetExecutionContext, config: FinetuneConfig, train: Path, val: Path) -> dg.Output:
        cfg = _load_cfg(config_file, config.profile)
        inputs = [_rel(train), _rel(val)] + ([EMBEDDED_BASE_RELDIR] if cfg.base_model == "embedded" else [])
        spec = {"config": cfg.model_dump(), "train": _rel(train), "val": _rel(val), "adapter_dir": adapter_rel(cfg)}
        context.log.info(f"training {role} LoRA, profile {cfg.profile} (${PROFILE_ENV}), base {cfg.base_model}")
        metrics = context.resources.compute.run_step("train_lora", spec, inputs=inputs, outputs=[adapter_rel(cfg)])
        ran_on = _ran_on(context.resources.compute, metrics.get("device", "cpu"))
        if not metrics.get("reused"):
            context.resources.catalog.get().record_run(
                kind="train", name=lora_key, run_id=context.run_id, params=cfg.model_dump(),
                metrics={k: v for k, v in metrics.items() if k != "rejects"} | {"ran_on": ran_on})
        folder = data_dir() / adapter_rel(cfg)
        plot_path, plot_md = save_loss_plot(metrics, folder.parent / f"{cfg.profile}_loss.png")
        return dg.Output(folder, metadata={
            "profile": cfg.profile,
            "base_model": cfg.base_model,
            "ran_on": ran_on,
            "reused_finished_run": bool(metrics.get("reused")),
            "base_val_loss": metrics["base_val_loss"],
            "trained_val_loss": metrics["val_loss"],
            "improvement": metrics["improvement"],
            "losses": dg.MetadataValue.md(loss_table_md(metrics) + "\n\n" + plot_md),
            "loss_plot": dg.MetadataValue.path(str(plot_path)),
            "steps": metrics["steps"],
            "tokens_per_s": round(metrics["tokens_per_s"], 1),
            "train_examples": metrics["train"]["examples"],
            "val_examples": metrics["val"]["examples"],
            "truncated_examples": metrics["train"]["truncated"] + metrics["val"]["truncated"],
            "rejected_examples": dg.MetadataValue.json(metrics.get("rejects", [])),
            "trainable_params": metrics["trainable_params"],
            "train_seconds": round(metrics["train_seconds"], 1),
            "inputs": [str(train), str(val)],
        })

    @dg.asset(name=gguf_key, group_name=group, kinds={"gguf"}, pool=LOCAL_MODEL_POOL,
              ins={"adapter": dg.AssetIn(lora_key), "val": dg.AssetIn(val_asset)},
              required_resource_keys={"compute", "catalog"},
              description=f"{role} model: adapter merged into the full-precision base, GGUF f16, quantized.")
    def gguf(context: dg.AssetExecutionContext, config: FinetuneConfig, adapter: Path, val: Path) -> dg.Output:
        cfg = _load_cfg(config_file, config.profile)
        name = gguf_file_name(cfg.base_model, role, cfg.export.quant)
        spec = {"config": cfg.model_dump(), "adapter_dir": _rel(adapter), "val": _rel(val), "out_dir": gguf_rel(cfg),
                "chat_messages": _chat_messages(val), "chat_max_tokens": cfg.max_seq}
        inputs = [_rel(adapter), _rel(val)] + ([EMBEDDED_BASE_RELDIR] if cfg.base_model == "embedded" else [])
        outputs = [f"{gguf_rel(cfg)}/{name}", f"{gguf_rel(cfg)}/{Path(name).stem}.json"]
        result = context.resources.compute.run_step("export_gguf", spec, inputs=inputs, outputs=outputs)
        if result["ppl_degradation"] > cfg.export.max_ppl_degradation:
            context.log.warning(f"{name}: perplexity {100 * result['ppl_degradation']:+.1f}% vs the merged model")
        ran_on = _ran_on(context.resources.compute, result.get("device", "cpu"))
        if not result.get("reused"):
            context.resources.catalog.get().record_run(
                kind="export", name=gguf_key, run_id=context.run_id, params=cfg.export.model_dump(),
                metrics=result | {"ran_on": ran_on})
        info, chat = result["gguf"], result.get("chat") or {}
        return dg.Output(data_dir() / gguf_rel(cfg) / name, metadata={
            "file": name,
            "ran_on": ran_on,
            "reused_finished_run": bool(result.get("reused")),
            "quant_declared": info["file_type"],
            "tensor_types": dg.MetadataValue.json(info["tensor_types"]),
            "matrix_tensors_k_quant": f"{info['matrix_tensors_k_quant']} of {info['matrix_tensors']}",
            "gguf_bytes": result["gguf_bytes"],
            "f16_bytes": result["intermediate_bytes"],
            "merged_checkpoint_bytes": result["merged_bytes"],
            "ppl_merged": result["ppl_merged"],
            "ppl_gguf": result["ppl_gguf"],
            "ppl_degradation_pct": round(100 * result["ppl_degradation"], 2),
            **({"ppl_f16_gguf": result["ppl_intermediate_gguf"]} if result.get("ppl_intermediate_gguf") else {}),
            "chat_finish_reason": str(chat.get("finish_reason")),
            "chat_reply": dg.MetadataValue.md(f"**{chat.get('prompt', '')}**\n\n{chat.get('reply', '')}"),
            "stage_seconds": dg.MetadataValue.json({k: round(v, 1) for k, v in result["timings"].items()}),
            "inputs": [str(adapter), str(val)],
        })

    @dg.asset(name=upload_key, group_name=group, kinds={"huggingface"},
              ins={"gguf_file": dg.AssetIn(gguf_key), "adapter": dg.AssetIn(lora_key),
                   "train": dg.AssetIn(train_asset), "val": dg.AssetIn(val_asset)},
              required_resource_keys={"hub"},
              description=f"Uploads the {role} GGUF with a model card (private). Without HF_TOKEN: uploads nothing, says so.")
    def upload(context: dg.AssetExecutionContext, config: FinetuneConfig, gguf_file: Path, adapter: Path,
               train: Path, val: Path) -> dg.MaterializeResult:
        cfg = _load_cfg(config_file, config.profile)
        training = json.loads((Path(adapter) / "training_metrics.json").read_text(encoding="utf-8"))
        export = json.loads(Path(gguf_file).with_suffix(".json").read_text(encoding="utf-8"))
        card = model_card(role=role, base_model=cfg.base_model if cfg.base_model != "embedded" else
                          "HuggingFaceTB/SmolLM2-135M-Instruct", base_note=cfg.base_model_note,
                          data={"train": Path(train).name, "val": Path(val).name},
                          settings=cfg.model_dump(exclude={"export"}), training=training, export=export,
                          ran_on=training.get("device", "cpu"))
        repo_id = config.hub_repo_id or f"distillery-{role}-gguf"
        result = context.resources.hub.upload_folder(Path(gguf_file).parent, repo_id, repo_type="model",
                                                     card_markdown=card)
        return dg.MaterializeResult(metadata={
            "uploaded": bool(result.get("uploaded")),
            "reason": str(result.get("reason") or ""),
            "url": str(result.get("url") or ""),
            "repo_id": repo_id,
            "model_card": dg.MetadataValue.md(card),
        })

    @dg.asset_check(asset=lora, name="trained_val_loss_below_base",
                    description="Validation loss after training is lower than the untouched base model's.")
    def loss_check(config: FinetuneConfig) -> dg.AssetCheckResult:
        m = _metrics(data_dir() / adapter_rel(_load_cfg(config_file, config.profile)) / "training_metrics.json")
        return dg.AssetCheckResult(passed=m["val_loss"] < m["base_val_loss"], metadata={
            "base_val_loss": m["base_val_loss"], "trained_val_loss": m["val_loss"]})

    @dg.asset_check(asset=gguf, name="ppl_degradation_within_limit",
                    description="Perplexity of the quantized GGUF is within the configured limit of the merged model's.")
    def ppl_check(config: FinetuneConfig) -> dg.AssetCheckResult:
        cfg = _load_cfg(config_file, config.profile)
        m = _metrics(data_dir() / gguf_rel(cfg) / Path(gguf_file_name(cfg.base_model, role, cfg.export.quant)).with_suffix(".json"))
        return dg.AssetCheckResult(passed=m["ppl_degradation"] <= cfg.export.max_ppl_degradation,
                                   severity=dg.AssetCheckSeverity.WARN, metadata={
                                       "ppl_merged": m["ppl_merged"], "ppl_gguf": m["ppl_gguf"],
                                       "degradation_pct": round(100 * m["ppl_degradation"], 2),
                                       "limit_pct": 100 * cfg.export.max_ppl_degradation})

    @dg.asset_check(asset=gguf, name="chat_reply_ends_on_end_of_turn",
                    description="The GGUF loads in llama-cpp-python and a greedy chat reply stops on the end-of-turn token.")
    def chat_check(config: FinetuneConfig) -> dg.AssetCheckResult:
        from distillery_assets.training.export import chat_check as run_chat

        cfg = _load_cfg(config_file, config.profile)
        path = data_dir() / gguf_rel(cfg) / gguf_file_name(cfg.base_model, role, cfg.export.quant)
        m = _metrics(path.with_suffix(".json"))
        recorded = m.get("chat") or {}
        messages = recorded.get("messages") or [{"role": "user", "content": CHAT_PROBE}]
        reply = run_chat(path, messages, max_tokens=recorded.get("max_tokens") or cfg.max_seq,
                         threads=cfg.threads or 2)
        return dg.AssetCheckResult(passed=reply["finish_reason"] == "stop", metadata={
            "finish_reason": str(reply["finish_reason"]), "completion_tokens": reply["completion_tokens"],
            "reply": dg.MetadataValue.md(reply["reply"] or "(empty)")})

    return [lora, gguf, upload, loss_check, ppl_check, chat_check]


def _metrics(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no recorded metrics; materialize the asset first")
    return json.loads(path.read_text(encoding="utf-8"))


defs = dg.Definitions(assets=[base_model])

"""Fine-tune chains: ``<name>_lora`` -> ``<name>_gguf`` -> ``<name>_gguf_upload``, one factory for every role.

Like Dagster's ``project_dagster_modal_pipes`` feed factory, each pipeline describes a chain with a small
frozen dataclass and hands it to the factory::

    finetune_chain(FinetuneChain(name="poet", train_asset="poet_train", val_asset="poet_val",
                                 group="poetry", config_file="poet.yaml",
                                 lora_asset="poet_lora", gguf_asset="poet_gguf", upload_asset="poet_gguf_upload"))

The three asset names are written out where a chain is declared, so a search for ``poet_gguf`` finds it.

The shared ``base_model`` asset (the float32 SmolLM2 checkpoint) lives in this module's ``defs`` once.
The heavy work runs through the ``compute`` resource (``run_step(spec)``: in process here, or on a Modal
GPU) with the typed specs of ``distillery_assets.training.steps``; the assets build a spec, record the run
in the catalogue, and publish the typed result as metadata and as asset check results (the checks are
judged from that result in hand, nothing is re-read or re-run).
"""

from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from assets.logs import forward_logs
from assets.meta import path_md, size, table_md, text_md
from assets.pools import Loads, model_pool
from distillery_assets.io import iter_jsonl
from distillery_assets.markdown import fit_md, human_size, text_block
from distillery_assets.paths import config_dir, data_dir, safe_child
from distillery_assets.steps import read_result
from distillery_assets.training.base_model import build_embedded_base, embedded_base_dir
from distillery_assets.training.chat_data import validate_messages
from distillery_assets.training.config import EMBEDDED_BASE, PROFILE_ENV, TrainConfig, load_train_config
from distillery_assets.training.lora import METRICS_FILE
from distillery_assets.training.perplexity import HeldoutText, read_heldout
from distillery_assets.training.report import (loss_inline_md, loss_table_md, model_card, ppl_sets_md,
                                               quant_attempts_md, save_loss_plot)
from distillery_assets.training.results import ExportResult, TrainResult
from distillery_assets.training.steps import ExportGGUFSpec, TrainLoraSpec
from resources.catalog import CatalogResource
from resources.compute import ComputeResource
from resources.hub import HubResource, record_upload

BASE_GROUP = "models"
CHAT_PROBE = "Introduce yourself in one sentence."  # used only when no validation record is usable
EMBEDDED_HF_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
FORWARDED_LOGGERS = ("distillery_assets.threads", "distillery_assets.training.export")
"""Library log lines shown live in a fine-tune step's run log: each spare core taken or given back, and the
export's quantization verdicts (the loop's per-step progress is left out: one line per optimizer step)."""
LOSS_CHECK, PPL_CHECK, CHAT_CHECK = ("trained_val_loss_below_base", "ppl_degradation_within_limit",
                                     "chat_reply_ends_on_end_of_turn")
BASE_LOADS_CHECK, BASE_PARAMS_CHECK = "base_model_loads", "parameter_count_as_configured"


class FinetuneConfig(dg.Config):
    profile: str | None = None
    """Training profile in the role's YAML (``full`` | ``cpu_small``); empty: $DISTILLERY_TRAIN_PROFILE or cpu_small."""
    hub_repo_id: str | None = None
    """Hub repository for the GGUF upload; empty: ``distillery-<role>-gguf`` under the token's namespace."""


@dataclass(frozen=True)
class FinetuneChain:
    """One fine-tune: the asset keys are ``<name>_lora``, ``<name>_gguf``, ``<name>_gguf_upload``, spelled out
    by the declaration (so each is found by its name) and checked against ``name`` here."""

    name: str
    train_asset: str
    val_asset: str
    group: str
    config_file: str
    """A file in ``data/config/training/``."""
    lora_asset: str
    gguf_asset: str
    upload_asset: str

    def __post_init__(self) -> None:
        given = (self.lora_asset, self.gguf_asset, self.upload_asset)
        expected = (f"{self.name}_lora", f"{self.name}_gguf", f"{self.name}_gguf_upload")
        if given != expected:
            raise ValueError(f"FinetuneChain {self.name!r}: asset names {given} must be {expected}")

    def config_path(self) -> Path:
        """The training profile YAML (an edited file: listed in the artefacts' inputs, so lineage reaches it)."""
        return safe_child(config_dir() / "training", self.config_file, source="FinetuneChain.config_file")

    def config(self, profile: str | None) -> TrainConfig:
        return load_train_config(self.config_path(), profile)

    def heldout_path(self, cfg: TrainConfig) -> Path | None:
        """The held-out text the export scores (``export.heldout_text``, relative to the YAML's folder)."""
        if not cfg.export.heldout_text:
            return None
        return safe_child(self.config_path().parent, cfg.export.heldout_text,
                          source=f"{self.config_file} export.heldout_text")

    def heldout(self, cfg: TrainConfig) -> HeldoutText | None:
        path = self.heldout_path(cfg)
        if path is None:
            return None
        return read_heldout(path, name=path.relative_to(config_dir()).as_posix()
                            if path.is_relative_to(config_dir()) else path.name)

    def adapter_rel(self, cfg: TrainConfig) -> str:  # one folder per profile: switching profiles keeps both runs
        return f"models/lora/{self.name}/{cfg.profile}"

    def gguf_rel(self, cfg: TrainConfig) -> str:
        return f"models/gguf/{self.name}/{cfg.profile}"


def _llama_parameters(cfg: dict) -> int | None:
    """The parameter count a Llama-architecture ``config.json`` describes (None for another architecture)."""
    if cfg.get("model_type") != "llama":
        return None
    v, h, i, n = cfg["vocab_size"], cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    head = cfg.get("head_dim") or h // cfg["num_attention_heads"]
    kv = cfg.get("num_key_value_heads") or cfg["num_attention_heads"]
    layer = 2 * h * cfg["num_attention_heads"] * head + 2 * h * kv * head + 3 * h * i + 2 * h
    return v * h + n * layer + h + (0 if cfg.get("tie_word_embeddings") else v * h)


def _stored_parameters(folder: Path) -> int:
    """The number of values in the checkpoint's safetensors files, read from their headers (nothing loaded)."""
    import json
    import math
    import struct

    total = 0
    for file in sorted(folder.glob("*.safetensors")):
        with file.open("rb") as fh:
            header = json.loads(fh.read(struct.unpack("<Q", fh.read(8))[0]))
        total += sum(math.prod(t["shape"]) for k, t in header.items() if k != "__metadata__")
    return total


def _has_chat_template(folder: Path) -> bool:
    import json

    tokenizer_config = folder / "tokenizer_config.json"
    return (folder / "chat_template.jinja").is_file() or (
        tokenizer_config.is_file() and "chat_template" in json.loads(tokenizer_config.read_text(encoding="utf-8")))


def _base_checks(folder: Path, info: dict) -> list[dg.AssetCheckResult]:
    """From the checkpoint in hand: what ``from_pretrained`` reads is there (config, weights, tokenizer, chat
    template), and the parameters the build counted in the loaded model, the weights file's tensors and the
    architecture in config.json all agree."""
    import json

    try:
        cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        cfg, problem = {}, f"config.json unreadable: {exc}"
    else:
        problem = ""
    files = {"config.json": bool(cfg), "weights (*.safetensors)": bool(list(folder.glob("*.safetensors"))),
             "tokenizer.json": (folder / "tokenizer.json").is_file(), "chat template": _has_chat_template(folder)}
    stored = _stored_parameters(folder) if files["weights (*.safetensors)"] else 0
    configured = _llama_parameters(cfg) if cfg else None
    counted = int(info.get("parameters") or 0)
    loads = all(files.values()) and bool(cfg.get("architectures")) and counted > 0
    return [
        dg.AssetCheckResult(check_name=BASE_LOADS_CHECK, passed=loads, metadata={
            "files": table_md([(name, "yes" if ok else "no") for name, ok in files.items()], ["file", "present"]),
            "architecture": ", ".join(cfg.get("architectures") or []) or "none",
            "parameters_counted_when_loaded": counted, **({"problem": problem} if problem else {})}),
        dg.AssetCheckResult(check_name=BASE_PARAMS_CHECK,
                            passed=configured is not None and configured == counted == stored, metadata={
                                "configured": configured if configured is not None else "not a llama config",
                                "counted_when_loaded": counted, "in_weights_file": stored,
                                "architecture": f"{cfg.get('num_hidden_layers')} layers, hidden {cfg.get('hidden_size')}, "
                                                f"vocab {cfg.get('vocab_size')}, tied embeddings "
                                                f"{bool(cfg.get('tie_word_embeddings'))}"}),
    ]


@dg.asset(group_name=BASE_GROUP, kinds={"pytorch"}, pool=model_pool(Loads.ALWAYS),
          check_specs=[
              dg.AssetCheckSpec(BASE_LOADS_CHECK, asset="base_model", description=(
                  "What from_pretrained reads is in the folder (config.json naming a causal LM architecture, the "
                  "safetensors weights, tokenizer.json, the chat template), and the build loaded it.")),
              dg.AssetCheckSpec(BASE_PARAMS_CHECK, asset="base_model", description=(
                  "The parameter count of config.json's architecture equals the count of the loaded model and of "
                  "the values stored in the weights file (134,515,008 for SmolLM2-135M)."))],
          description="Full-precision SmolLM2-135M-Instruct checkpoint, de-quantized once from the bundled GGUF; "
                      "the offline base for every LoRA (real runs name a Hugging Face model id instead).")
def base_model(context: dg.AssetExecutionContext):
    folder = embedded_base_dir(data_dir())
    info = build_embedded_base(folder)
    yield dg.Output(folder, metadata={
        "path": path_md(folder), "size": size(folder), "parameters": info["parameters"],
        "dtype": info["dtype"], "source": info["source_gguf"], "end_of_turn_token": info["end_of_turn_token"],
        "reused_existing": info["reused"], "note": info["note"],
    })
    yield from _base_checks(folder, info)


def _require_base(cfg: TrainConfig, asset_key: str) -> None:
    """Fail with the way out when the embedded base checkpoint (the ``base_model`` asset) was never made:
    a selection without ``base_model`` in it, on a data folder where it was not materialized before."""
    folder = embedded_base_dir(data_dir())
    if cfg.base_model == EMBEDDED_BASE and not (folder / "config.json").is_file():
        raise dg.Failure(f"{asset_key}: the base checkpoint {folder} is missing; it is the base_model asset: add "
                         f"base_model to the selection (or select '*{asset_key}', everything upstream)")


def _rel(path: Path) -> str:
    root = data_dir()
    try:
        return str(Path(path).resolve().relative_to(root))
    except ValueError as exc:
        raise ValueError(f"{path} is not under the data directory {root}; steps take paths relative to it") from exc


def _chat_messages(val_file: Path) -> list[dict[str, str]]:
    """The chat probe: the validation conversation whose reference reply is shortest, up to (not including)
    that reply, so a reply of the trained kind ends well inside the check's token budget."""
    probes = []
    for _, record in iter_jsonl(val_file, on_error="yield"):
        if isinstance(record, dict):
            try:
                messages = validate_messages(record)
            except ValueError:
                continue
            probes.append((len(messages[-1]["content"]), len(probes), messages[:-1]))
    if not probes:
        return [{"role": "user", "content": CHAT_PROBE}]
    return min(probes)[2]


def _lora_metadata(result: TrainResult, ran_on: str, folder: Path, inputs: list[Path]) -> dict:
    plot_path, plot_md = save_loss_plot(result.model_dump(), folder.parent / f"{result.profile}_loss.png")
    return {
        "profile": result.profile, "base_model": result.base_model, "ran_on": ran_on,
        "reused_finished_run": result.reused,
        # rounded for the UI; the catalogue's run row keeps the exact numbers
        "base_val_loss": round(result.base_val_loss, 4), "trained_val_loss": round(result.val_loss, 4),
        "improvement": round(result.improvement, 4),
        # two small entries the UI shows in place (under 1000 characters each), then the full-size plot
        "loss_curves": dg.MetadataValue.md(loss_inline_md(result.model_dump())),
        "loss_table": dg.MetadataValue.md(loss_table_md(result.model_dump())),
        "losses_full": dg.MetadataValue.md(loss_table_md(result.model_dump()) + "\n\n" + plot_md),
        "loss_plot": path_md(plot_path),
        "steps": result.steps, "resumed_from_step": result.resumed_from_step,
        "tokens_per_s": round(result.tokens_per_s, 1),
        "train_examples": result.train.examples, "val_examples": result.val.examples,
        "truncated_examples": result.train.truncated + result.val.truncated,
        "rejected_examples": dg.MetadataValue.json([r.model_dump() for r in result.rejects]),
        "trainable_params": result.trainable_params, "train_seconds": round(result.train_seconds, 1),
        "adapter_size": size(folder), "inputs": [str(p) for p in inputs],
    }


def _quant_summary(result: ExportResult) -> str:
    if not result.fallback_used:
        return f"{result.quant} (primary)"
    return (f"{result.quant} (fallback: primary {result.primary_quant} was "
            f"{100 * result.quant_attempts[0].ppl_degradation:+.2f}%, over the {100 * result.ppl_limit:.0f}% bound)")


def _gguf_metadata(result: ExportResult, ran_on: str, inputs: list[Path]) -> dict:
    info, chat = result.gguf, result.chat
    export = result.model_dump()
    tokens = {s.name: s.tokens for s in result.ppl_sets}
    return {
        "file": result.gguf_file, "ran_on": ran_on, "reused_finished_run": result.reused,
        "quant": _quant_summary(result), "primary_quant": result.primary_quant, "fallback_used": result.fallback_used,
        "quant_attempts": dg.MetadataValue.md(quant_attempts_md(export)),
        "quant_declared": info.file_type, "tensor_types": dg.MetadataValue.json(info.tensor_types),
        "matrix_tensors_k_quant": f"{info.matrix_tensors_k_quant} of {info.matrix_tensors}",
        "sizes": f"GGUF {human_size(result.gguf_bytes)}, f16 GGUF {human_size(result.intermediate_bytes)}, "
                 f"merged checkpoint {human_size(result.merged_bytes)}",
        "perplexity": dg.MetadataValue.md(ppl_sets_md(export)),
        "ppl_merged": round(result.ppl_merged, 4), "ppl_gguf": round(result.ppl_gguf, 4),
        "ppl_degradation_pct": round(100 * result.ppl_degradation, 2),
        **({"ppl_f16_gguf": round(result.ppl_intermediate_gguf, 4)} if result.ppl_intermediate_gguf else {}),
        "ppl_tokens": result.ppl_tokens, "ppl_val_examples": result.ppl_examples,
        "ppl_val_tokens": tokens.get("validation", 0), "ppl_heldout_tokens": tokens.get("held-out", 0),
        "chat_finish_reason": str(chat.finish_reason if chat else None),
        **({"chat_tokens": f"{chat.completion_tokens} of {chat.max_tokens}"} if chat else {}),
        "chat_reply": dg.MetadataValue.md(fit_md(lambda n: f"**prompt**\n\n{text_block(chat.prompt, n // 2)}\n\n"
                                                 f"**reply**\n\n{text_block(chat.reply, n)}", (1200, 800, 600, 400))
                                          if chat else ""),
        "stage_seconds": dg.MetadataValue.json({k: round(v, 1) for k, v in result.timings.items()}),
        "inputs": [str(p) for p in inputs],
    }


def _gguf_checks(result: ExportResult) -> list[dg.AssetCheckResult]:
    chat = result.chat
    return [
        dg.AssetCheckResult(check_name=PPL_CHECK, passed=result.ppl_degradation_ok,
                            severity=dg.AssetCheckSeverity.WARN, metadata={
                                "ppl_merged": round(result.ppl_merged, 4), "ppl_gguf": round(result.ppl_gguf, 4),
                                "degradation_pct": round(100 * result.ppl_degradation, 2),
                                "limit_pct": round(100 * result.ppl_limit, 2),
                                "quant": _quant_summary(result), "tokens_scored": result.ppl_tokens,
                                "attempts": dg.MetadataValue.md(quant_attempts_md(result.model_dump()))}),
        dg.AssetCheckResult(check_name=CHAT_CHECK, passed=result.chat_stopped, metadata={
            "finish_reason": str(chat.finish_reason if chat else "no chat check ran"),
            "completion_tokens": chat.completion_tokens if chat else 0,
            "max_tokens": chat.max_tokens if chat else 0,
            "reply": text_md((chat.reply if chat else "") or "(empty)")}),
    ]


def finetune_chain(chain: FinetuneChain) -> list[dg.AssetsDefinition]:
    """``<name>_lora`` (with the loss check), ``<name>_gguf`` (with the perplexity and chat checks) and
    ``<name>_gguf_upload``."""
    return [_lora_asset(chain), _gguf_asset(chain), _upload_asset(chain)]


def _lora_asset(chain: FinetuneChain) -> dg.AssetsDefinition:
    lora_key = chain.lora_asset

    @dg.asset(name=lora_key, group_name=chain.group, kinds={"pytorch"}, pool=model_pool(Loads.COMPUTE),
              ins={"train": dg.AssetIn(chain.train_asset), "val": dg.AssetIn(chain.val_asset)}, deps=[base_model],
              check_specs=[dg.AssetCheckSpec(LOSS_CHECK, asset=lora_key, description=(
                  "Validation loss after training is lower than the untouched base model's."))],
              description=f"LoRA adapter for the {chain.name} role (settings: data/config/training/{chain.config_file}).")
    def lora(context: dg.AssetExecutionContext, config: FinetuneConfig, compute: ComputeResource,
             catalog: CatalogResource, train: Path, val: Path):
        cfg = chain.config(config.profile)
        spec = TrainLoraSpec(config=cfg, train=_rel(train), val=_rel(val), adapter_dir=chain.adapter_rel(cfg))
        _require_base(cfg, lora_key)
        context.log.info(f"training {chain.name} LoRA, profile {cfg.profile} (${PROFILE_ENV}), base {cfg.base_model}")
        with forward_logs(context, FORWARDED_LOGGERS):
            result = compute.run_step(spec)
        ran_on = compute.ran_on(result.device)
        if not result.reused:
            catalog.get().record_run(kind="train", name=lora_key, run_id=context.run_id, params=cfg.model_dump(),
                                     metrics=result.model_dump(mode="json", exclude={"rejects"}) | {"ran_on": ran_on})
        folder = data_dir() / spec.adapter_dir
        yield dg.Output(folder, metadata=_lora_metadata(result, ran_on, folder, [train, val, chain.config_path()]))
        yield dg.AssetCheckResult(check_name=LOSS_CHECK, passed=result.loss_improved, metadata={
            "base_val_loss": round(result.base_val_loss, 4), "trained_val_loss": round(result.val_loss, 4)})

    return lora


def _gguf_asset(chain: FinetuneChain) -> dg.AssetsDefinition:
    lora_key, gguf_key = chain.lora_asset, chain.gguf_asset

    @dg.asset(name=gguf_key, group_name=chain.group, kinds={"gguf"}, pool=model_pool(Loads.COMPUTE),
              ins={"adapter": dg.AssetIn(lora_key), "val": dg.AssetIn(chain.val_asset)},
              check_specs=[
                  dg.AssetCheckSpec(PPL_CHECK, asset=gguf_key, description=(
                      "Perplexity of the kept GGUF (the primary quant, else the first fallback within the bound) on the "
                      "validation split plus the held-out text is within the configured limit of the merged model's.")),
                  dg.AssetCheckSpec(CHAT_CHECK, asset=gguf_key, description=(
                      "The GGUF loads in llama-cpp-python and a greedy chat reply stops on the end-of-turn token."))],
              description=f"{chain.name} model: adapter merged into the full-precision base, GGUF f16, quantized.")
    def gguf(context: dg.AssetExecutionContext, config: FinetuneConfig, compute: ComputeResource,
             catalog: CatalogResource, adapter: Path, val: Path):
        cfg = chain.config(config.profile)
        spec = ExportGGUFSpec(config=cfg, adapter_dir=_rel(adapter), val=_rel(val), out_dir=chain.gguf_rel(cfg),
                              chat_messages=_chat_messages(val), heldout=chain.heldout(cfg))
        _require_base(cfg, gguf_key)
        with forward_logs(context, FORWARDED_LOGGERS):
            result = compute.run_step(spec)
        ran_on = compute.ran_on(result.device)
        if not result.reused:
            catalog.get().record_run(kind="export", name=gguf_key, run_id=context.run_id,
                                     params=cfg.export.model_dump(), metrics=result.model_dump(mode="json") | {"ran_on": ran_on})
        sources = [adapter, val, chain.config_path(), *filter(None, [chain.heldout_path(cfg)])]
        yield dg.Output(data_dir() / result.gguf_path, metadata=_gguf_metadata(result, ran_on, sources))
        yield from _gguf_checks(result)

    return gguf


def _upload_asset(chain: FinetuneChain) -> dg.AssetsDefinition:
    gguf_key, upload_key = chain.gguf_asset, chain.upload_asset

    @dg.asset(name=upload_key, group_name=chain.group, kinds={"huggingface"},
              ins={"gguf_file": dg.AssetIn(gguf_key), "adapter": dg.AssetIn(chain.lora_asset),
                   "train": dg.AssetIn(chain.train_asset), "val": dg.AssetIn(chain.val_asset)},
              description=f"Uploads the {chain.name} GGUF with a model card (private); nothing when the repo already "
                          "holds these files (sha256). Without HF_TOKEN: uploads nothing, says so.")
    def upload(context: dg.AssetExecutionContext, config: FinetuneConfig, hub: HubResource, catalog: CatalogResource,
               gguf_file: Path, adapter: Path, train: Path, val: Path) -> dg.MaterializeResult:
        cfg = chain.config(config.profile)
        training = _recorded(Path(adapter) / METRICS_FILE, TrainResult)
        export = _recorded(Path(gguf_file).with_suffix(".json"), ExportResult)
        repo_id = config.hub_repo_id or f"distillery-{chain.name}-gguf"
        card = model_card(role=chain.name, base_model=EMBEDDED_HF_ID if cfg.base_model == EMBEDDED_BASE else cfg.base_model,
                          base_note=cfg.base_model_note, data={"train": Path(train).name, "val": Path(val).name},
                          settings=cfg.model_dump(exclude={"export"}), training=training.model_dump(),
                          export=export.model_dump(), ran_on=training.device, repo_id=hub.full_repo_id(repo_id))
        result = hub.upload_folder(Path(gguf_file).parent, repo_id, repo_type="model", card_markdown=card)
        return dg.MaterializeResult(metadata={**record_upload(context, catalog.get(), result),
                                              "model_card": dg.MetadataValue.md(card)})

    return upload


def _recorded(path: Path, model: type[TrainResult] | type[ExportResult]):
    result = read_result(path, model)
    if result is None:
        raise FileNotFoundError(f"{path}: no recorded {model.__name__}; materialize the asset first")
    return result


defs = dg.Definitions(assets=[base_model])

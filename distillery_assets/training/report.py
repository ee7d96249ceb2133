"""Human-readable views of a fine-tune: loss table, loss plot (PNG), and the model card for the Hub."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distillery_assets.io import atomic_write_bytes
from distillery_assets.markdown import md_table
from distillery_assets.plots import BLUE, GREY, INLINE_MD_LIMIT, RED, Chart, Series, chart_md, chart_png, png_md  # noqa: F401


def loss_table_md(metrics: dict[str, Any]) -> str:
    """Validation loss of the base, then train and validation loss after each epoch (4 decimals kept)."""
    rows = [("base", 0, None, f"{metrics['base_val_loss']:.4f}")]
    rows += [(e["epoch"], e["steps"], f"{e['train_loss']:.4f}", f"{e['val_loss']:.4f}") for e in metrics["epochs"]]
    return md_table(rows, ["epoch", "steps", "train loss", "val loss"], align="rrrr")


def loss_chart(metrics: dict[str, Any]) -> Chart:
    """Train and validation loss per epoch, with the base model's validation loss as a dashed line."""
    epochs = [e["epoch"] for e in metrics["epochs"]]
    role, profile = metrics.get("role") or "", metrics.get("profile") or ""
    title = f"{role} LoRA loss per epoch" + (f" ({profile})" if profile else "") if role else "LoRA loss per epoch"
    return Chart(title.strip(), "epoch", "loss (assistant tokens)", [
        Series("train", [e["train_loss"] for e in metrics["epochs"]], x=epochs, colour=BLUE, points=True),
        Series("validation", [e["val_loss"] for e in metrics["epochs"]], x=epochs, colour=RED, points=True),
        Series("base model (validation)", [metrics["base_val_loss"]], style="hline", colour=GREY)])


def loss_plot_png(metrics: dict[str, Any]) -> bytes:
    """The loss chart full size (file and model card)."""
    return chart_png(loss_chart(metrics), figsize=(5.6, 3.4))


def loss_inline_md(metrics: dict[str, Any]) -> str:
    """The loss chart as one markdown image under :data:`INLINE_MD_LIMIT` characters, so the plot (title,
    axis labels, legend) shows on the asset page without a click."""
    return chart_md(loss_chart(metrics))


def save_loss_plot(metrics: dict[str, Any], path: Path) -> tuple[Path, str]:
    """Write the PNG atomically; return its path and a Markdown snippet embedding it inline."""
    png = loss_plot_png(metrics)
    atomic_write_bytes(Path(path), png)
    return Path(path), png_md(png, "loss curves")


def ppl_sets_md(export: dict[str, Any]) -> str:
    """Perplexity per evaluation set (validation split, held-out text) with the tokens each scored."""
    rows = [(s["name"], s["source"], s["examples"], s["tokens"], round(s["ppl_merged"], 3),
             "" if s.get("ppl_f16") is None else round(s["ppl_f16"], 3), round(s["ppl_gguf"], 3),
             f"{100 * (s['ppl_gguf'] / s['ppl_merged'] - 1):+.2f}%") for s in export.get("ppl_sets") or []]
    rows.append(("all", "", "", export.get("ppl_tokens", ""), round(export["ppl_merged"], 3),
                 "" if export.get("ppl_intermediate_gguf") is None else round(export["ppl_intermediate_gguf"], 3),
                 round(export["ppl_gguf"], 3), f"{100 * export['ppl_degradation']:+.2f}%"))
    return md_table(rows, ["set", "source", "examples", "tokens", "merged", "f16 GGUF", export["quant"], "change"],
                    align="llrrrrrr", digits=3)


def quant_attempts_md(export: dict[str, Any]) -> str:
    """Each quantization tried, in order, against the bound; the last row is the kept file."""
    limit = export.get("ppl_limit")
    rows = [(a["quant"], round(a["ppl_gguf"], 3), f"{100 * a['ppl_degradation']:+.2f}%",
             "yes" if a["within_limit"] else "no", round(a["gguf_bytes"] / 1e6, 1),
             "kept" if i == len(export["quant_attempts"]) - 1 else "")
            for i, a in enumerate(export.get("quant_attempts") or [])]
    head = ["quant", "ppl", "vs merged", f"within {100 * limit:.0f}%" if limit is not None else "within limit",
            "MB", ""]
    return md_table(rows, head, align="lrrrrl", digits=3)


def _ppl_scope(export: dict[str, Any]) -> str:
    sets = export.get("ppl_sets") or []
    if not sets:
        return " on validation (assistant tokens)"
    return " on " + " + ".join(f"{s['name']} ({s['tokens']} tokens)" for s in sets)


def _export_sections(export: dict[str, Any]) -> list[str]:
    out = []
    if export.get("ppl_sets"):
        out += ["", "## Perplexity", "", ppl_sets_md(export)]
    if export.get("quant_attempts"):
        primary = export.get("primary_quant") or export["quant"]
        fallbacks = ", ".join(export.get("fallback_quants") or []) or "none"
        out += ["", "## Quantization", "",
                f"Primary {primary}; fallbacks in order: {fallbacks}; kept: **{export['quant']}**.", "",
                quant_attempts_md(export)]
    return out


def model_card(*, role: str, base_model: str, base_note: str, data: dict[str, Any], settings: dict[str, Any],
               training: dict[str, Any], export: dict[str, Any], ran_on: str, repo_id: str | None = None,
               asset_key: str | None = None, run_id: str | None = None) -> str:
    """Model card (README.md) for the uploaded GGUF: base, data, settings, metrics, and what was not run.
    Rendered by the one card renderer, :func:`distillery_assets.hub.render_model_card`."""
    from distillery_assets.hub import ModelCardInfo, render_model_card

    chat = export.get("chat") or {}
    description = (f"A LoRA fine-tune of **{base_model}** for the **{role}** role, merged and quantized to "
                   f"**{export['quant']}** with llama.cpp. Built by the Distillery pipeline; trained on {ran_on}.")
    primary = export.get("primary_quant") or export["quant"]
    if primary != export["quant"]:
        description += (f"\n\nThe primary quantization {primary} lost more perplexity than the bound allows, so the "
                        f"fallback **{export['quant']}** was kept (see Quantization below).")
    if base_note:
        description += f"\n\nBase model note: {base_note}"
    sections = [
        "## Training files",
        "",
        f"- training examples: {training['train']['examples']} (truncated to max_seq: {training['train']['truncated']})",
        f"- validation examples: {training['val']['examples']}",
        f"- files: {', '.join(f'`{v}`' for v in data.values())}",
        "- loss on assistant tokens only (system and user turns masked)",
        "",
        "## Results",
        "",
        loss_table_md(training),
        "",
        f"- validation loss: base {training['base_val_loss']:.4f} -> fine-tuned {training['val_loss']:.4f}",
        f"- perplexity{_ppl_scope(export)}: merged model {export['ppl_merged']:.3f}, "
        f"{export['quant']} GGUF {export['ppl_gguf']:.3f} ({100 * export['ppl_degradation']:+.1f}%)",
        f"- tensor types in the file: {export['gguf']['tensor_types']}",
        f"- chat check: finish_reason `{chat.get('finish_reason')}` after {chat.get('completion_tokens')} tokens"
        + (f" (budget {chat['max_tokens']})" if chat.get("max_tokens") else ""),
        *_export_sections(export),
    ]
    return render_model_card(ModelCardInfo(
        repo_id=repo_id or f"distillery-{role}-gguf", title=export["gguf_file"], description=description,
        asset_key=asset_key or f"{role}_gguf", run_id=run_id, base_model=base_model, tags=["lora"],
        gguf_file=export["gguf_file"], quantization=export["quant"], settings=settings,
        metrics={"base_val_loss": training["base_val_loss"], "val_loss": training["val_loss"],
                 "ppl_merged": export["ppl_merged"], "ppl_gguf": export["ppl_gguf"],
                 "ppl_degradation_pct": round(100 * export["ppl_degradation"], 2),
                 **({"ppl_tokens": export["ppl_tokens"]} if export.get("ppl_tokens") else {}),
                 **({"primary_quant": export["primary_quant"]} if export.get("primary_quant") else {})},
        extra_markdown="\n".join(sections)))


def export_summary(export: dict[str, Any]) -> str:
    """A few lines on one export for a terminal: the kept quant (and why), perplexity with its tokens, chat."""
    chat = export.get("chat") or {}
    attempts = ", ".join(f"{a['quant']} {100 * a['ppl_degradation']:+.2f}%" for a in export.get("quant_attempts") or [])
    ok = "PASS" if export.get("ppl_degradation_ok") else "FAIL"
    stopped = "PASS" if chat.get("finish_reason") == "stop" else "FAIL"
    primary = export.get("primary_quant") or export["quant"]
    kept = export["quant"] if export["quant"] == primary else f"{export['quant']} (fallback; primary {primary})"
    sets = "; ".join(f"{s['name']} {s['tokens']} tokens: {s['ppl_merged']:.3f} -> {s['ppl_gguf']:.3f}"
                     for s in export.get("ppl_sets") or [])
    return "\n".join([
        f"{export['gguf_file']}  ({export['gguf_bytes'] / 1e6:.1f} MB)",
        f"  quant kept: {kept}; tried: {attempts or export['quant']}",
        f"  [{ok}] perplexity {export['ppl_merged']:.3f} merged -> {export['ppl_gguf']:.3f} GGUF "
        f"({100 * export['ppl_degradation']:+.2f}%, limit {100 * export['ppl_limit']:.0f}%) over "
        f"{export.get('ppl_tokens', '?')} tokens ({sets})",
        f"  [{stopped}] chat reply: finish_reason {chat.get('finish_reason')} after {chat.get('completion_tokens')} "
        f"of {chat.get('max_tokens')} tokens",
    ])


def main(argv: list[str] | None = None) -> int:
    """``python -m distillery_assets.training.report FOLDER...``: the summary of each export record found."""
    import json
    import sys

    from distillery_assets.training.results import ExportResult

    found = 0
    for folder in (argv if argv is not None else sys.argv[1:]):
        for record in sorted(Path(folder).rglob("*.json")):
            try:
                result = ExportResult.model_validate_json(record.read_text(encoding="utf-8"))
            except ValueError:
                continue
            print(export_summary(json.loads(result.model_dump_json())))
            found += 1
    if not found:
        print("no export records found", file=sys.stderr)
    return 0 if found else 1


if __name__ == "__main__":
    raise SystemExit(main())

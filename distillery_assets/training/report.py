"""Human-readable views of a fine-tune: loss table, loss plot (PNG), and the model card for the Hub."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

from distillery_assets.io import atomic_write_bytes
from distillery_assets.markdown import md_table


def loss_table_md(metrics: dict[str, Any]) -> str:
    """Validation loss of the base, then train and validation loss after each epoch (4 decimals kept)."""
    rows = [("base", 0, None, f"{metrics['base_val_loss']:.4f}")]
    rows += [(e["epoch"], e["steps"], f"{e['train_loss']:.4f}", f"{e['val_loss']:.4f}") for e in metrics["epochs"]]
    return md_table(rows, ["epoch", "steps", "train loss", "val loss"], align="rrrr")


def loss_plot_png(metrics: dict[str, Any]) -> bytes:
    """Train and validation loss per epoch, with the base model's validation loss as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [e["epoch"] for e in metrics["epochs"]]
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
    ax.plot(epochs, [e["train_loss"] for e in metrics["epochs"]], "o-", label="train")
    ax.plot(epochs, [e["val_loss"] for e in metrics["epochs"]], "s-", label="validation")
    ax.axhline(metrics["base_val_loss"], color="grey", linestyle="--", label="base model (validation)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (assistant tokens)")
    ax.set_title(f"{metrics.get('role', '')} LoRA ({metrics.get('profile', '')})")
    ax.set_xticks(epochs)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def save_loss_plot(metrics: dict[str, Any], path: Path) -> tuple[Path, str]:
    """Write the PNG atomically; return its path and a Markdown snippet embedding it inline."""
    png = loss_plot_png(metrics)
    atomic_write_bytes(Path(path), png)
    return Path(path), f"![loss curves](data:image/png;base64,{base64.b64encode(png).decode()})"


def model_card(*, role: str, base_model: str, base_note: str, data: dict[str, Any], settings: dict[str, Any],
               training: dict[str, Any], export: dict[str, Any], ran_on: str, repo_id: str | None = None,
               asset_key: str | None = None, run_id: str | None = None) -> str:
    """Model card (README.md) for the uploaded GGUF: base, data, settings, metrics, and what was not run.
    Rendered by the one card renderer, :func:`distillery_assets.hub.render_model_card`."""
    from distillery_assets.hub import ModelCardInfo, render_model_card

    chat = export.get("chat") or {}
    description = (f"A LoRA fine-tune of **{base_model}** for the **{role}** role, merged and quantized to "
                   f"**{export['quant']}** with llama.cpp. Built by the Distillery pipeline; trained on {ran_on}.")
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
        f"- perplexity on validation (assistant tokens): merged model {export['ppl_merged']:.3f}, "
        f"{export['quant']} GGUF {export['ppl_gguf']:.3f} ({100 * export['ppl_degradation']:+.1f}%)",
        f"- tensor types in the file: {export['gguf']['tensor_types']}",
        f"- chat check: finish_reason `{chat.get('finish_reason')}` after {chat.get('completion_tokens')} tokens",
    ]
    return render_model_card(ModelCardInfo(
        repo_id=repo_id or f"distillery-{role}-gguf", title=export["gguf_file"], description=description,
        asset_key=asset_key or f"{role}_gguf", run_id=run_id, base_model=base_model, tags=["lora"],
        gguf_file=export["gguf_file"], quantization=export["quant"], settings=settings,
        metrics={"base_val_loss": training["base_val_loss"], "val_loss": training["val_loss"],
                 "ppl_merged": export["ppl_merged"], "ppl_gguf": export["ppl_gguf"],
                 "ppl_degradation_pct": round(100 * export["ppl_degradation"], 2)},
        extra_markdown="\n".join(sections)))

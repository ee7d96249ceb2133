"""Model cards (README.md with YAML metadata) built with huggingface_hub's card classes.

The YAML header comes from ``ModelCardData`` so the Hub indexes base model, datasets, licence and tags; the
body is a Jinja template below.
"""

from __future__ import annotations

import json
from typing import Any

from huggingface_hub import ModelCard, ModelCardData
from pydantic import BaseModel, Field

from distillery_assets.markdown import md_table

MODEL_TEMPLATE = """---
{{ card_data }}
---

# {{ title }}

{{ description }}

## At a glance

{{ glance_table }}

## Training data
{% if dataset_list %}
{% for name in dataset_list %}- [{{ name }}](https://huggingface.co/datasets/{{ name }})
{% endfor %}{% else %}
The training data was not published with this model.
{% endif %}
## Training settings
{% if settings_table %}
{{ settings_table }}
{% else %}
No training settings were recorded.
{% endif %}
## Evaluation
{% if evaluation_markdown %}
{{ evaluation_markdown }}
{% elif metrics_table %}
{{ metrics_table }}
{% else %}
No evaluation metrics were recorded for this model.
{% endif %}
{%- if usage_markdown %}
## Use it

{{ usage_markdown }}
{%- elif gguf_file %}
## Run it with llama.cpp

Fetch the file, then chat with it in the terminal or serve an OpenAI-compatible API:

```bash
hf download {{ repo_id }} {{ gguf_file }} --local-dir .
llama-cli -m {{ gguf_file }} -cnv{% if system_prompt %} -p {{ system_prompt_shell }}{% endif %}
llama-server -m {{ gguf_file }} --port 8080
```

From Python with llama-cpp-python:

```python
from llama_cpp import Llama

llm = Llama.from_pretrained(repo_id="{{ repo_id }}", filename="{{ gguf_file }}", n_ctx={{ n_ctx }})
reply = llm.create_chat_completion(messages=[
{%- if system_prompt %}
    {"role": "system", "content": {{ system_prompt_py }}},
{%- endif %}
    {"role": "user", "content": "Write four lines about the sea."},
])
print(reply["choices"][0]["message"]["content"])
```
{%- elif not artefact %}
## Use the adapter

```python
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

base = AutoModelForCausalLM.from_pretrained("{{ base_model }}")
model = PeftModel.from_pretrained(base, "{{ repo_id }}")
tokenizer = AutoTokenizer.from_pretrained("{{ base_model }}")
```
{%- endif %}
{%- if extra_markdown %}

{{ extra_markdown }}
{%- endif %}

## Limitations

{{ limitations }}
"""

class ModelCardInfo(BaseModel):
    repo_id: str
    title: str
    description: str
    asset_key: str
    base_model: str | None = None
    datasets: list[str] = Field(default_factory=list)
    license: str = "apache-2.0"
    language: list[str] = Field(default_factory=lambda: ["en"])
    tags: list[str] = Field(default_factory=list)
    gguf_file: str | None = None  # None: a LoRA adapter folder, unless ``artefact`` says what it is
    artefact: str | None = None  # what the repo holds when it is neither a GGUF nor a LoRA (weights from scratch)
    library_name: str | None = None  # default: gguf, or peft for a LoRA
    pipeline_tag: str = "text-generation"
    usage_markdown: str | None = None  # how to load it, when it is neither a GGUF nor a causal-LM LoRA
    evaluation_markdown: str | None = None  # the Evaluation section's body, when a metrics table is not enough
    quantization: str | None = None
    settings: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    system_prompt: str | None = None
    n_ctx: int = 2048
    run_id: str | None = None
    extra_markdown: str | None = None  # further sections (loss table, plots, chat check), placed before Limitations
    limitations: str = (
        "A small fine-tune on synthetic, LLM-generated data: it imitates the style of its training set and "
        "can state wrong facts with confidence. Review its output before relying on it."
    )


def _fmt(value: Any) -> str:
    """A settings or metrics value as table text (``md_table`` escapes it)."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return str(value).replace("\n", " ")


def _pairs_table(values: dict[str, Any], head: list[str]) -> str | None:
    return md_table([(k, _fmt(v)) for k, v in values.items()], head) if values else None


def _shell_quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def render_model_card(info: ModelCardInfo) -> str:
    kind_tag = "gguf" if info.gguf_file else (None if info.artefact else "lora")
    tags = sorted({"distillery", *info.tags, *([kind_tag] if kind_tag else [])})
    library = info.library_name or ("gguf" if info.gguf_file else "peft")
    data = ModelCardData(
        base_model=info.base_model, datasets=info.datasets or None, license=info.license,
        language=info.language, library_name=library, tags=tags,
        pipeline_tag=info.pipeline_tag, model_name=info.title,
    )
    base = f"[{info.base_model}](https://huggingface.co/{info.base_model})" if info.base_model else "(trained from scratch)"
    built = f"Distillery asset `{info.asset_key}`" + (f", run `{info.run_id}`" if info.run_id else "")
    glance = [("Base model", base),
              ("Artefact", f"GGUF file `{info.gguf_file}`" if info.gguf_file else info.artefact or "LoRA adapter (PEFT)"),
              *([("Quantization", info.quantization)] if info.quantization else []), ("Built by", built)]
    card = ModelCard.from_template(
        data, template_str=MODEL_TEMPLATE,
        title=info.title, description=info.description, asset_key=info.asset_key, run_id=info.run_id,
        repo_id=info.repo_id, dataset_list=info.datasets, gguf_file=info.gguf_file,
        glance_table=md_table(glance, ["", ""]),
        settings_table=_pairs_table(info.settings, ["Setting", "Value"]),
        metrics_table=_pairs_table(info.metrics, ["Metric", "Value"]),
        system_prompt=info.system_prompt,
        system_prompt_shell=_shell_quote(info.system_prompt or ""),
        system_prompt_py=json.dumps(info.system_prompt or ""),
        n_ctx=info.n_ctx, limitations=info.limitations, extra_markdown=info.extra_markdown,
        artefact=info.artefact, usage_markdown=info.usage_markdown, evaluation_markdown=info.evaluation_markdown,
    )
    return str(card)

"""Poetry pipeline: raw poems -> teaching data (T1..T6, poet pairs) -> gated ChatML splits -> fine-tunes ->
GGUF files -> sample tutor sessions. Thin wiring: the work lives in ``distillery_assets.poetry``.

Volumes come from ``data/config/poetry/pipeline.yaml`` (profile ``small`` offline, ``full`` for real runs;
``$DISTILLERY_POETRY_PROFILE`` overrides). LLM calls go through the ``llm`` resource (cached, retried).
"""


import json
from pathlib import Path

import dagster as dg

from assets.finetune import FinetuneChain, finetune_chain
from assets.meta import chat_md, inputs_meta, llm_usage_meta, records_table
from assets.pools import Loads, model_pool

from distillery_assets.datasets import chatml
from distillery_assets.io import atomic_write_jsonl, atomic_write_text, read_jsonl
from distillery_assets.markdown import bullets_md, escape_md, text_block
from distillery_assets.markdown import fit_md_table, md_table
from distillery_assets.plots import Chart, Series, chart_md, chart_png, save_png
from distillery_assets.poetry import evaluate, feedback, generate
from distillery_assets.poetry.datasets import build_role_dataset, check_role_split, gate_for
from distillery_assets.poetry.generate import TaskOutput
from distillery_assets.poetry.quality_gate import TEXT_FIELD, reason_counts
from distillery_assets.poetry.session import session_markdown
from distillery_assets.poetry.settings import PoetryConfig
from distillery_assets.poetry.sources import step_sources
from distillery_assets.plots import INLINE_MD_LIMIT
from resources.llm import LLMResource

GROUP = "poetry"
LLM_POOL = model_pool(Loads.LLM)  # local_model only when the LLM runs in this process (assets/pools.py)


def _cells(record: dict) -> dict:
    """A record one level deep, for previews: a nested poem shows as its text."""
    return {k: v.get("text", json.dumps(v, ensure_ascii=False)) if isinstance(v, dict) else v
            for k, v in record.items()}


def _first_record_md(records: list[dict]) -> dg.MetadataValue:
    """The first record field by field, long or multi-line text (poems, critiques) in blocks that keep
    their line breaks, clipped so the entry shows in place on the asset page (the whole record is in the
    file under ``path`` and in ``records_preview``)."""
    if not records:
        return dg.MetadataValue.md("(no records)")
    md = ""
    for limit in (1500, 600, 360, 220, 140, 80):
        parts = []
        for key, value in _cells(records[0]).items():
            text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
            parts.append(f"**{escape_md(key)}**\n\n{text_block(text, limit)}" if "\n" in text or len(text) > 80
                         else f"**{escape_md(key)}**: {escape_md(text)}")
        md = "\n\n".join(parts)
        if len(md) < INLINE_MD_LIMIT:
            break
    return dg.MetadataValue.md(md)


PREVIEW_KEYS = ("id", "source", "origin")
"""Short fields every records preview keeps as columns; the record's two longest texts get a row each."""


def _preview_table(rows: list[dict]) -> dg.TableMetadataValue:
    """The first records: identifying fields as columns, the two longest texts each in a row of its own."""
    first = rows[0]
    texts = sorted((k for k, v in first.items() if k not in PREVIEW_KEYS and isinstance(v, str)),
                   key=lambda k: -len(first[k]))[:2]
    return records_table(rows, [k for k in first if k in PREVIEW_KEYS], n=5,
                         long=[k for k in first if k in texts])


def _result(out: TaskOutput, context: dg.AssetExecutionContext, llm: LLMResource | None = None, **extra) -> dg.Output:
    """The task's file with its counts, LLM usage and previews. An empty file is marked where the asset's own
    page shows it: ``dagster/row_count`` 0 and a ``status`` entry first, and an error in the run's log."""
    counts = {k: v for k, v in out.summary().items() if not k.startswith("llm_")}
    rows = [_cells(r) for r in out.records]
    status = None
    if not rows:
        status = (f"EMPTY: no record written ({len(out.rejects)} rejected of {counts.get('requested', '?')} "
                  f"requested); see reject_log")
        context.log.error(f"{out.path.name}: {status}")
    meta = {
        **({"status": status} if status else {}),
        "dagster/row_count": len(rows),
        **counts,
        **llm_usage_meta(out.usage, llm.provider if llm is not None else None),
        "path": dg.MetadataValue.path(str(out.path)),
        "reject_log": dg.MetadataValue.path(str(out.reject_path)) if out.reject_path else None,
        "preview": _first_record_md(out.records),
        "records_preview": _preview_table(rows) if rows else None,
        **extra,
    }
    if out.rejects:
        meta["reject_reasons"] = dg.MetadataValue.md(bullets_md(  # as many as show in place; all in reject_log
            [f"`{r.source}`: {escape_md(r.reason)}" for r in out.rejects],
            item_chars=240, more=lambda n: f"… and {n:,} more in `reject_log`"))
    return dg.Output(out.path, metadata={k: v for k, v in meta.items() if v is not None})


def _read(step: str) -> dict:
    """Output metadata naming the edited files ``step`` reads, so the catalogue's lineage reaches them."""
    return inputs_meta(step_sources(PoetryConfig(), step))


# ---- raw poems ---------------------------------------------------------------------------------------------

@dg.asset(group_name=GROUP, kinds={"python"}, description="Good poems read from data/inputs/poetry/good (.txt / .jsonl); bad files are logged rejects.")
def poetry_good_poems(context: dg.AssetExecutionContext) -> dg.Output:
    out = generate.good_poems(PoetryConfig())
    for r in out.rejects:
        context.log.warning(f"rejected {r.source}: {r.reason}")
    return _result(out, context, **_read("good_poems"))


@dg.asset(group_name=GROUP, pool=LLM_POOL, kinds={"jsonl"},
          description="Cliché-laden drafts: the user's (data/inputs/poetry/bad) or, when none, written by the LLM.")
def poetry_bad_poems(context: dg.AssetExecutionContext, llm: LLMResource) -> dg.Output:
    out, origin = generate.bad_poems(PoetryConfig(), llm.get_client(context))
    for r in out.rejects:
        context.log.warning(f"rejected {r.source}: {r.reason}")
    if not out.records:
        raise RuntimeError(f"no bad poems: {len(out.rejects)} rejected, see {out.reject_path}")
    return _result(out, context, llm, origin=origin, **_read("bad_poems"))


# ---- teaching data, one asset per task -------------------------------------------------------------------

# The main job's longest chain is the poet's: briefs -> poet pairs (the largest LLM step, ~2 min of one core)
# -> poet_lora -> poet_gguf; the educator's steps fit beside it on the other model slot. Dagster hands a free
# slot to the ready step with the highest `dagster/priority` first, so the poet pairs start as soon as their
# briefs are written instead of queueing behind the educator's data (22 s later in a fresh main job). The order
# changes no sample: the local provider seeds each request from what it asks (llm/providers/local.py), so a step's
# replies do not depend on which steps the same process ran before it.
CRITICAL_PATH = {"dagster/priority": "1"}


@dg.asset(group_name=GROUP, pool=LLM_POOL, kinds={"jsonl"}, description="T1 workshop critiques of good and bad poems.")
def poetry_critiques(context: dg.AssetExecutionContext, llm: LLMResource, poetry_good_poems: Path, poetry_bad_poems: Path) -> dg.Output:
    out = generate.critiques(PoetryConfig(), llm.get_client(context),
                             generate.read_poems(poetry_good_poems), generate.read_poems(poetry_bad_poems))
    return _result(out, context, llm, **_read("critique"))


@dg.asset(group_name=GROUP, pool=LLM_POOL, kinds={"jsonl"}, op_tags=CRITICAL_PATH,
          description="T2 generation briefs for the user requests in data/inputs/poetry/requests.txt.")
def poetry_briefs(context: dg.AssetExecutionContext, llm: LLMResource) -> dg.Output:
    return _result(generate.briefs(PoetryConfig(), llm.get_client(context)), context, llm, **_read("brief"))


@dg.asset(group_name=GROUP, pool=LLM_POOL, kinds={"jsonl"}, description="T3 comparisons of a good and a bad poem (order alternates).")
def poetry_comparisons(context: dg.AssetExecutionContext, llm: LLMResource, poetry_good_poems: Path, poetry_bad_poems: Path) -> dg.Output:
    out = generate.comparisons(PoetryConfig(), llm.get_client(context),
                               generate.read_poems(poetry_good_poems), generate.read_poems(poetry_bad_poems))
    return _result(out, context, llm, **_read("comparison"))


@dg.asset(group_name=GROUP, pool=LLM_POOL, kinds={"jsonl"}, description="T4 cliché autopsies of bad poems.")
def poetry_autopsies(context: dg.AssetExecutionContext, llm: LLMResource, poetry_bad_poems: Path) -> dg.Output:
    out = generate.autopsies(PoetryConfig(), llm.get_client(context),
                             generate.read_poems(poetry_bad_poems))
    return _result(out, context, llm, **_read("autopsy"))


@dg.asset(group_name=GROUP, pool=LLM_POOL, kinds={"jsonl"},
          description="T5 revision dialogues: a student's revision of a critiqued poem, then the educator's follow-up.")
def poetry_dialogues(context: dg.AssetExecutionContext, llm: LLMResource, poetry_critiques: Path) -> dg.Output:
    out = generate.dialogues(PoetryConfig(), llm.get_client(context), read_jsonl(poetry_critiques))
    return _result(out, context, llm, **_read("dialogue"))


@dg.asset(group_name=GROUP, pool=LLM_POOL, kinds={"jsonl"}, description="T6 craft lessons answering the questions in prompts.yaml.")
def poetry_lessons(context: dg.AssetExecutionContext, llm: LLMResource) -> dg.Output:
    return _result(generate.lessons(PoetryConfig(), llm.get_client(context)), context, llm, **_read("lesson"))


@dg.asset(group_name=GROUP, pool=LLM_POOL, kinds={"jsonl"}, op_tags=CRITICAL_PATH,
          description="Brief -> poem pairs for the poet model: the LLM's poem for each brief, and the LLM's brief "
                      "for each shipped public-domain poem (data/inputs/poetry/verse), that poem as the target.")
def poetry_poet_pairs(context: dg.AssetExecutionContext, llm: LLMResource, poetry_briefs: Path) -> dg.Output:
    out = generate.poet_pairs(PoetryConfig(), llm.get_client(context), read_jsonl(poetry_briefs))
    grounded = sum(r.get("origin") == "verse" for r in out.records)
    return _result(out, context, llm, pairs_on_shipped_verse=grounded, pairs_on_llm_poems=len(out.records) - grounded,
                   **_read("poet_pair"))


TASK_ASSETS = {
    "critique": "poetry_critiques",
    "brief": "poetry_briefs",
    "comparison": "poetry_comparisons",
    "autopsy": "poetry_autopsies",
    "dialogue": "poetry_dialogues",
    "lesson": "poetry_lessons",
    "poet_pair": "poetry_poet_pairs",
}


def _gate_check(task: str, asset_name: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=asset_name, name=f"{asset_name}_quality_gate",
                    description=f"Quality gate on {task} records' own field {TEXT_FIELD[task]!r} (the rules the "
                                f"dataset applies, the verse rule included): warns when none pass. A warning, not "
                                f"an error: the role's dataset is judged as a whole by its own checks, and offline the "
                                f"small profile asks for two or three records a task, all of which the 135M teacher "
                                f"can miss.")
    def _check(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        path = generate.poetry_dir("generated", f"{task}.jsonl")
        records = read_jsonl(path)
        passed, rejected = gate_for(PoetryConfig()).split(task, records, verse=True)
        return dg.AssetCheckResult(
            passed=bool(passed),
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"records": len(records), "passed": len(passed), "rejected": len(rejected),
                      "pass_rate": round(len(passed) / len(records), 3) if records else 0.0,
                      "reasons": dg.MetadataValue.json(reason_counts(rejected))},
        )

    return _check


GATE_CHECKS = [_gate_check(task, name) for task, name in TASK_ASSETS.items()]


# ---- datasets ----------------------------------------------------------------------------------------------

def _dataset_outputs(context: dg.AssetExecutionContext, role: str, task_files: dict[str, Path]):
    """Both split files are always written together (one seeded split); only the selected outputs are yielded."""
    ds = build_role_dataset(PoetryConfig(), role, task_files, count_tokens=chatml.embedded_token_counter())
    selected = context.selected_output_names
    common = {
        "per_task": dg.MetadataValue.json(ds.per_task),
        "gate_reject_reasons": dg.MetadataValue.json(ds.reject_reasons),
        "gate_reject_log": dg.MetadataValue.path(str(ds.reject_path)),
        "duplicates_removed": ds.duplicates_removed,
        **_read(f"{role}_dataset"),
        "split": dg.MetadataValue.json(ds.split_info),
    }
    if f"{role}_train" in selected:
        yield dg.Output(ds.train_path, output_name=f"{role}_train",
                        metadata={"examples": len(ds.train), "dagster/row_count": len(ds.train),
                                  "path": dg.MetadataValue.path(str(ds.train_path)), "preview": chat_md(ds.train),
                                  **common})
    if f"{role}_val" in selected:
        yield dg.Output(ds.valid_path, output_name=f"{role}_val",
                        metadata={"examples": len(ds.valid), "dagster/row_count": len(ds.valid),
                                  "path": dg.MetadataValue.path(str(ds.valid_path)), **common})


@dg.multi_asset(
    name="educator_dataset", group_name=GROUP,
    outs={"educator_train": dg.AssetOut(description="Educator ChatML training split (JSONL).", is_required=False, kinds={"jsonl"}),
          "educator_val": dg.AssetOut(description="Educator ChatML validation split (JSONL).", is_required=False, kinds={"jsonl"})},
    can_subset=True,
    description="Quality-gated T1..T6 records as ChatML (condensed persona as system), seeded 90/10 split.",
)
def educator_dataset(context: dg.AssetExecutionContext, poetry_critiques: Path, poetry_briefs: Path, poetry_comparisons: Path, poetry_autopsies: Path,
                     poetry_dialogues: Path, poetry_lessons: Path):
    yield from _dataset_outputs(context, "educator", {
        "critique": poetry_critiques, "brief": poetry_briefs, "comparison": poetry_comparisons,
        "autopsy": poetry_autopsies, "dialogue": poetry_dialogues, "lesson": poetry_lessons})


@dg.multi_asset(
    name="poet_dataset", group_name=GROUP,
    outs={"poet_train": dg.AssetOut(description="Poet ChatML training split (brief -> poem).", is_required=False, kinds={"jsonl"}),
          "poet_val": dg.AssetOut(description="Poet ChatML validation split.", is_required=False, kinds={"jsonl"})},
    can_subset=True,
    description="Quality-gated brief -> poem pairs as ChatML, seeded 90/10 split: the generated pairs and the "
                "users' kept, well-rated tutor sessions (tutor_feedback).",
)
def poet_dataset(context: dg.AssetExecutionContext, poetry_poet_pairs: Path, tutor_feedback: Path):
    yield from _dataset_outputs(context, "poet", {"poet_pair": [poetry_poet_pairs, tutor_feedback]})


def _dataset_check(split_key: str, role: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=split_key, name=f"{split_key}_valid_chatml",
                    description="Schema, roles, empty turns, duplicates, leakage into the other split, token lengths "
                                "vs the training profile's max_seq.")
    def _check(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        verdict = check_role_split(PoetryConfig(), role, "train" if split_key.endswith("train") else "val",
                                   count_tokens=chatml.embedded_token_counter())
        return dg.AssetCheckResult(passed=verdict.passed,
                                   metadata={**verdict.summary(), "tokenizer": chatml.EMBEDDED_TOKENIZER})

    return _check


DATASET_CHECKS = [_dataset_check(k, role) for role in ("educator", "poet") for k in (f"{role}_train", f"{role}_val")]


# ---- fine-tunes (built by the shared factory) and sample sessions ------------------------------------------

# The graph has only the data dependencies; `--select '*poet_gguf'` (every ancestor) takes the whole chain
# from an empty data dir.
def _finetune_assets() -> list:
    return [
        *finetune_chain(FinetuneChain(name="educator", train_asset="educator_train", val_asset="educator_val",
                                      group=GROUP, config_file="educator.yaml", lora_asset="educator_lora",
                                      gguf_asset="educator_gguf", upload_asset="educator_gguf_upload")),
        *finetune_chain(FinetuneChain(name="poet", train_asset="poet_train", val_asset="poet_val", group=GROUP,
                                      config_file="poet.yaml", lora_asset="poet_lora", gguf_asset="poet_gguf",
                                      upload_asset="poet_gguf_upload")),
    ]


@dg.asset(group_name=GROUP, pool=model_pool(Loads.ALWAYS), kinds={"llamacpp", "gguf"},
          description="A few tutor sessions (brief, drafts, critiques, final note) run on the exported GGUF files.")
def poetry_sample_sessions(context: dg.AssetExecutionContext, educator_gguf: Path, poet_gguf: Path) -> dg.Output:
    from distillery_assets.poetry.tutor import run_sessions

    cfg = PoetryConfig()
    sessions = run_sessions(cfg.inference.sample_requests, Path(educator_gguf), Path(poet_gguf), cfg=cfg)
    path = generate.poetry_dir("sessions", "sample_sessions.jsonl")
    atomic_write_jsonl(path, sessions)
    markdown = "\n---\n".join(session_markdown(s) for s in sessions)
    atomic_write_text(path.with_suffix(".md"), markdown)
    steps = [s for sess in sessions for s in sess["metadata"]["steps"]]
    return dg.Output(path, metadata={
        **_read("sessions"),
        "sessions": len(sessions),
        "critique_rounds": [s["metadata"]["critique_rounds"] for s in sessions],
        "replies_ending_on_end_of_turn": sum(s["finish_reason"] == "stop" for s in steps),
        "replies_cut_at_max_tokens": sum(s["finish_reason"] == "length" for s in steps),
        "educator_model": Path(educator_gguf).name, "poet_model": Path(poet_gguf).name,
        "model_load_seconds": dg.MetadataValue.json([s["metadata"].get("model_loads", []) for s in sessions]),
        "preview": dg.MetadataValue.md(markdown),
    })


# ---- the users' feedback and the evals on held-out prompts ---------------------------------------------------

@dg.asset(group_name=GROUP, kinds={"jsonl"},
          description="The users' feedback on tutor sessions (data/inputs/poetry/feedback/feedback.jsonl, written by "
                      "the tutor CLI): sessions, mean rating over time, kept rate; kept, well-rated sessions become "
                      "poet pairs (brief -> final poem) for the next poet_dataset.")
def tutor_feedback(context: dg.AssetExecutionContext) -> dg.Output:
    cfg = PoetryConfig()
    settings = feedback.load_feedback_settings(cfg)
    source = feedback.feedback_path()
    entries, rejects = feedback.read_feedback(source, settings)
    pairs, pair_rejects = feedback.poet_pairs(entries, settings, source=source.name)
    rejects += pair_rejects
    for r in rejects:
        context.log.warning(f"feedback reject {r.source}: {r.reason}")
    path = generate.poetry_dir("feedback", "poet_pairs.jsonl")
    atomic_write_jsonl(path, pairs)
    reject_path = generate.poetry_dir("rejects", "tutor_feedback.jsonl")
    atomic_write_jsonl(reject_path, [r.to_dict() for r in rejects])
    summary = feedback.summarize(entries)
    recent = [(e.record["timestamp"], e.record["user_request"], e.feedback["rating"],
               "yes" if e.feedback["kept_poem"] else "no",
               {True: "yes", False: "no"}.get(e.feedback.get("educator_helpful"), ""), e.feedback.get("notes", ""))
              for e in entries[-10:]]
    meta = {
        "sessions": summary["sessions"],
        "mean_rating": round(summary["mean_rating"], 3) if summary["mean_rating"] is not None else "no feedback yet",
        "kept_rate": round(summary["kept_rate"], 3) if summary["kept_rate"] is not None else "no feedback yet",
        "educator_helpful_rate": round(summary["educator_helpful_rate"], 3)
        if summary["educator_helpful_rate"] is not None else "no answers",
        "poet_pairs": len(pairs), "dagster/row_count": len(pairs),
        "rule": f"kept and rated {settings.min_rating} or more of {settings.max_rating}",
        "rejects": len(rejects), "reject_log": dg.MetadataValue.path(str(reject_path)),
        "feedback_file": dg.MetadataValue.path(str(source)), "path": dg.MetadataValue.path(str(path)),
        "rating_by_day": dg.MetadataValue.md(md_table(
            [(d["day"], d["sessions"], round(d["mean_rating"], 2)) for d in summary["by_day"]],
            ["day", "sessions", "mean rating"], align="lrr") if summary["by_day"] else "(no feedback yet)"),
        "latest_sessions": dg.MetadataValue.md(fit_md_table(recent[::-1], ["time (UTC)", "request", "rating", "kept",
                                                                       "educator helped", "notes"], align="llrlll",
                                                            more=lambda n: f"… and {n} older in feedback_file")
                                               if recent else "(no feedback yet)"),
        **inputs_meta([p for p in (source, cfg.file("feedback.yaml")) if p.exists()]),
    }
    if len(summary["running_mean_rating"]) >= 2:
        meta["mean_rating_over_time"] = dg.MetadataValue.md(chart_md(Chart(
            "Mean rating over sessions", "session", "mean rating so far",
            [Series("running mean", summary["running_mean_rating"]),
             Series("each session", [e.feedback["rating"] for e in entries], style="dashed")])))
    return dg.Output(path, metadata=meta)


EVAL_CHECKS = {role: (f"{role}_finetune_not_worse_than_base", f"{role}_gguf_keeps_finetune_quality")
               for role in evaluate.ROLES}


def _eval_check_specs(role: str) -> list[dg.AssetCheckSpec]:
    measure, better = evaluate.OBJECTIVE[role]
    worse = "lower" if better > 0 else "higher"
    not_worse, keeps = EVAL_CHECKS[role]
    return [
        dg.AssetCheckSpec(not_worse, asset=f"{role}_eval", description=(
            f"Fails when the fine-tune's {measure} on the held-out prompts is {worse} than the base model's beyond "
            f"noise: the paired bootstrap interval of the difference excludes 0.")),
        dg.AssetCheckSpec(keeps, asset=f"{role}_eval", description=(
            f"Warns when the exported GGUF's {measure} is {worse} than the merged fine-tune's beyond noise (quant "
            f"preservation, paired bootstrap interval excluding 0).")),
    ]


def _eval_inputs(cfg: PoetryConfig, role: str) -> list[Path]:
    ev = evaluate.load_eval_settings(cfg)
    rubric = ev.judge.poet_rubric if role == "poet" else ev.judge.educator_rubric
    system = "poet_system.txt" if role == "poet" else "persona_condensed.txt"
    return [*evaluate.heldout_files(), *(cfg.file(n) for n in ("eval.yaml", rubric, "inference.yaml", system,
                                                                 "banned_phrases.txt", "pipeline.yaml"))]


def _run_eval(context: dg.AssetExecutionContext, role: str, llm: LLMResource, adapter: Path, gguf: Path,
              train: Path):
    """Generate, measure, compare and judge (``distillery_assets.poetry.evaluate``); yield the output and checks."""
    from distillery_assets.paths import config_dir, data_dir
    from distillery_assets.training.base_model import resolve_base
    from distillery_assets.training.config import load_train_config

    cfg = PoetryConfig()
    prompts = evaluate.heldout_prompts(role)
    leaks = evaluate.training_overlap(prompts, [Path(train)])
    if leaks:
        raise dg.Failure(f"{role}_eval: held-out prompts found in the training split: {leaks[:5]}")
    train_cfg = load_train_config(config_dir() / "training" / f"{role}.yaml", None)
    base = resolve_base(train_cfg.base_model, data_dir())
    out_dir = generate.poetry_dir("eval", role)
    models, reused_models = evaluate.prepare_models(base, Path(adapter), Path(gguf), out_dir / "models")
    client = llm.get_client(context)
    ev = evaluate.evaluate_role(role, models, out_dir, cfg=cfg, client=client, prompts=prompts, log=context.log.info)
    measure, _ = ev.objective
    d, g, q = ev.vs_base[measure], ev.gguf_vs_base[measure], ev.quant[measure]
    chart = evaluate.chart(ev)
    png = save_png(chart_png(chart), out_dir / "chart.png", chart.describe())
    meta = {
        "summary": evaluate.summary_words(ev),
        "prompts": len(prompts), "dagster/row_count": len(prompts),
        f"{measure}_base": round(d.mean_b, 4), f"{measure}_finetune": round(d.mean_a, 4),
        f"{measure}_gguf": round(q.mean_a, 4),
        f"{measure}_finetune_minus_base": round(d.diff, 4),
        f"{measure}_finetune_minus_base_ci": f"[{d.lo:+.4f}, {d.hi:+.4f}] ({round(100 * d.confidence)}%, n={d.n})",
        f"{measure}_gguf_minus_base": f"{g.diff:+.4f} [{g.lo:+.4f}, {g.hi:+.4f}]",
        f"{measure}_gguf_minus_finetune": f"{q.diff:+.4f} [{q.lo:+.4f}, {q.hi:+.4f}]",
        "table": dg.MetadataValue.md(evaluate.table_markdown(ev, full=False)),
        "chart": dg.MetadataValue.md(chart_md(chart)),
        "table_full": dg.MetadataValue.md(evaluate.table_markdown(ev)),
        "chart_full": dg.MetadataValue.md(png),
        "judge": dg.MetadataValue.md(evaluate.judge_markdown(ev.judge)),
        "judge_model": ev.judge.judge if ev.judge else "none",
        "judge_weakness": ev.judge.weakness if ev.judge else "",
        "samples": dg.MetadataValue.md(evaluate.samples_markdown(ev)),
        "models": dg.MetadataValue.md(md_table([(evaluate.VARIANT_NAMES[v], m.path.name, m.note)
                                                for v, m in ev.models.items()], ["model", "file", "what"])),
        "f16_models_reused": dg.MetadataValue.json(reused_models),
        "replies_reused": dg.MetadataValue.json(ev.reused_replies),
        "sampling": dg.MetadataValue.json(ev.settings),
        "heldout_in_training_split": 0,
        "report": dg.MetadataValue.path(str(out_dir / "report.json")),
        **inputs_meta(_eval_inputs(cfg, role)),
    }
    if role == "educator":
        meta["gate_failures_by_kind"] = dg.MetadataValue.md(evaluate.gate_table_markdown(ev))
    yield dg.Output(out_dir, metadata=meta)
    not_worse, keeps = EVAL_CHECKS[role]
    yield dg.AssetCheckResult(check_name=not_worse, passed=not ev.worse_than_base(), metadata={
        "measure": measure, "base": round(d.mean_b, 4), "finetune": round(d.mean_a, 4), "diff": round(d.diff, 4),
        "ci": f"[{d.lo:+.4f}, {d.hi:+.4f}]", "prompts": d.n, "verdict": d.words("fine-tune", "base")})
    yield dg.AssetCheckResult(check_name=keeps, passed=not ev.quant_worse(), severity=dg.AssetCheckSeverity.WARN,
                              metadata={"measure": measure, "finetune": round(q.mean_b, 4), "gguf": round(q.mean_a, 4),
                                        "diff": round(q.diff, 4), "ci": f"[{q.lo:+.4f}, {q.hi:+.4f}]",
                                        "prompts": q.n, "verdict": q.words("GGUF", "fine-tune")})


@dg.asset(group_name=GROUP, pool=model_pool(Loads.ALWAYS), kinds={"llamacpp", "gguf"}, deps=["base_model"],
          ins={"adapter": dg.AssetIn("poet_lora"), "gguf": dg.AssetIn("poet_gguf"), "train": dg.AssetIn("poet_train")},
          check_specs=_eval_check_specs("poet"),
          description="The poet judged on 30+ held-out briefs (data/inputs/poetry/heldout): base, merged fine-tune and "
                      "GGUF on the same prompts and seeds; verse rate, lines, distinct lines, brief echo, banned "
                      "phrases; fine-tune vs base and GGUF vs fine-tune with bootstrap intervals; a pairwise judge.")
def poet_eval(context: dg.AssetExecutionContext, llm: LLMResource, adapter: Path, gguf: Path, train: Path):
    yield from _run_eval(context, "poet", llm, adapter, gguf, train)


@dg.asset(group_name=GROUP, pool=model_pool(Loads.ALWAYS), kinds={"llamacpp", "gguf"}, deps=["base_model"],
          ins={"adapter": dg.AssetIn("educator_lora"), "gguf": dg.AssetIn("educator_gguf"),
               "train": dg.AssetIn("educator_train")},
          check_specs=_eval_check_specs("educator"),
          description="The educator judged on 30+ held-out student poems (data/inputs/poetry/heldout): base, merged "
                      "fine-tune and GGUF on the same prompts and seeds; quality-gate failures per reply, length, "
                      "naming a line or quoting the poem; bootstrap intervals; a pairwise judge.")
def educator_eval(context: dg.AssetExecutionContext, llm: LLMResource, adapter: Path, gguf: Path, train: Path):
    yield from _run_eval(context, "educator", llm, adapter, gguf, train)


def build_defs() -> dg.Definitions:
    assets = [poetry_good_poems, poetry_bad_poems, poetry_critiques, poetry_briefs, poetry_comparisons,
              poetry_autopsies, poetry_dialogues, poetry_lessons, poetry_poet_pairs, tutor_feedback, educator_dataset,
              poet_dataset, *_finetune_assets(), poetry_sample_sessions, poet_eval, educator_eval]
    return dg.Definitions(assets=assets, asset_checks=[*GATE_CHECKS, *DATASET_CHECKS])


defs = build_defs()

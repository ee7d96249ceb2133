"""poet_eval / educator_eval: the held-out sets, the measures, the paired bootstrap, the judge and the asset's
checks, on scripted models (chat callables that answer from a script) and a scripted LLM judge."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest

from distillery_assets.poetry import evaluate
from distillery_assets.poetry.evaluate import (ModelFile, Prompt, educator_measures, paired_bootstrap,
                                               poet_measures, training_overlap)
from distillery_assets.poetry.quality_gate import Gate
from distillery_assets.poetry.session import Reply
from distillery_assets.poetry.settings import PoetryConfig
from tests.support.llm import scripted_client

VERSE = "salt on the sill\nthe kettle ticks\na gull folds its wings\nthe ferry leans home"
PROSE = ("This poem explores the ferry and the fog, and the poet uses images of water to show how the crossing "
         "feels to the people on board, which is a very moving thing to read about on a grey day.")


# ---- held-out sets -------------------------------------------------------------------------------------

def test_the_shipped_heldout_sets_have_thirty_or_more_prompts_each():
    briefs, poems = evaluate.heldout_prompts("poet"), evaluate.heldout_prompts("educator")
    assert len(briefs) >= 30 and len(poems) >= 30
    assert len({p.text for p in briefs}) == len(briefs) and len({p.text for p in poems}) == len(poems)
    assert evaluate.load_eval_settings(PoetryConfig()).min_prompts >= 30


def _norm(text: str) -> str:
    return evaluate._norm(text)


def test_no_training_input_contains_a_heldout_prompt_and_no_training_step_reads_the_heldout_folder():
    from distillery_assets.paths import config_dir, inputs_dir
    from distillery_assets.poetry.sources import STEPS, step_sources

    heldout = evaluate.heldout_dir().resolve()
    training_files = [p for p in (inputs_dir() / "poetry").rglob("*")
                      if p.is_file() and heldout not in p.resolve().parents]
    training_files += [p for p in (config_dir() / "poetry").rglob("*") if p.is_file()]
    training_files += list((config_dir() / "training" / "heldout").rglob("*.txt"))
    bodies = {p: _norm(p.read_text(encoding="utf-8", errors="ignore")) for p in training_files}
    assert len(bodies) > 60  # the good and verse poems, requests, prompts: what the teaching data is made from
    for prompt in evaluate.heldout_prompts("poet") + evaluate.heldout_prompts("educator"):
        text = _norm(prompt.text)
        leaks = [str(p) for p, body in bodies.items() if text in body]
        assert not leaks, f"{prompt.id} appears in {leaks}"
    cfg = PoetryConfig()
    for step in STEPS:
        read = [Path(p).resolve() for p in step_sources(cfg, step)]
        assert not [p for p in read if heldout in p.parents], step


def test_training_overlap_names_the_file_and_line_of_a_leaked_prompt(tmp_path):
    prompts = [Prompt("b1", "Write about a ferry in fog.", "x"), Prompt("b2", "Write about salt pans.", "x")]
    train = tmp_path / "train.jsonl"
    rows = [{"messages": [{"role": "user", "content": "something else"}, {"role": "assistant", "content": "x"}]},
            {"messages": [{"role": "user", "content": "WRITE about a ferry, in fog!"}]}]
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert training_overlap(prompts, [train]) == ["b1 in train.jsonl:2"]


# ---- measures and statistics -------------------------------------------------------------------------------

def test_poet_measures_count_verse_lines_echo_and_banned_phrases():
    brief = "Write about the ferry in fog with the horn and the wet rail"
    good = poet_measures(VERSE, brief, ["rich tapestry"], "stop")
    assert good == {"verse": 1.0, "lines": 4.0, "distinct_line_ratio": 1.0, "brief_echo": 0.0,
                    "banned_phrase": 0.0, "cut_at_max_tokens": 0.0}
    echo = poet_measures("write about the ferry in fog\nwith the horn\nand the wet rail\na rich tapestry", brief,
                         ["rich tapestry"], "length")
    assert echo["brief_echo"] > 0.5 and echo["banned_phrase"] == 1.0 and echo["cut_at_max_tokens"] == 1.0
    loop = poet_measures("the sea\nthe sea\nthe sea\nthe sea", brief, [], "stop")
    assert loop["verse"] == 0.0 and loop["distinct_line_ratio"] == 0.25
    assert poet_measures(PROSE, brief, [], "stop")["verse"] == 0.0


def test_educator_measures_gate_failures_and_pointing_at_the_poem():
    cfg = PoetryConfig()
    gate = Gate(cfg.pipeline.quality_gate, cfg.banned_phrases)
    poem = "The bus is late again.\nA woman counts her change twice."
    good = educator_measures('"counts her change twice" is alive; line 1 only reports. Cut "again" and let the wait '
                             "show in what she does.", poem, gate, "stop")
    assert good["gate_failures"] == 0 and good["names_line"] == 1 and good["quotes_poem"] == 1
    bad = educator_measures("Let us delve into this. Great job! I give it 7/10.", poem, gate, "length")
    assert bad["gate_failures"] >= 4 and bad["gate_pass"] == 0 and bad["cites_poem"] == 0
    assert bad["gate_llm_ism"] == bad["gate_voice_break"] == bad["gate_anti_rubric"] == bad["gate_specificity"] == 1
    made_up = educator_measures('I love "the sea at midnight" here, it sings.', poem, gate, "stop")
    assert made_up["quotes_poem"] == 0  # a quote that is not in the poem does not count


def test_paired_bootstrap_interval_excludes_zero_only_for_a_real_difference():
    better = paired_bootstrap("verse", [1.0] * 25 + [0.0] * 5, [0.0] * 25 + [1.0] * 5)
    assert better.diff == pytest.approx(20 / 30) and better.lo > 0 and better.excludes_zero
    noise = paired_bootstrap("verse", [1, 0] * 15, [0, 1] * 15)
    assert noise.lo < 0 < noise.hi and not noise.excludes_zero
    same = paired_bootstrap("verse", [1.0] * 30, [1.0] * 30)
    assert (same.diff, same.lo, same.hi, same.excludes_zero) == (0.0, 0.0, 0.0, False)
    with pytest.raises(ValueError, match="equal"):
        paired_bootstrap("verse", [1.0], [])


# ---- one role end to end on scripted models ----------------------------------------------------------------

class ScriptedModel:
    loaded: list = []

    def __init__(self, path: Path, answer):
        self.path, self.answer, self.calls = path, answer, []
        ScriptedModel.loaded.append(path.name)

    def __call__(self, messages, sampling):
        self.calls.append((messages, sampling))
        return Reply(self.answer(messages[-1]["content"]), "stop")

    def close(self):
        pass


def _models(tmp_path) -> dict[str, ModelFile]:
    out = {}
    for v in evaluate.VARIANTS:
        path = tmp_path / f"{v}.gguf"
        path.write_bytes(v.encode())
        out[v] = ModelFile(v, path, v)
    return out


def _factory(answers: dict[str, str]):
    return lambda path, system: ScriptedModel(path, lambda user: answers[path.stem])


def _judge_client(answer="1"):
    return scripted_client(lambda messages, **_: answer)


def test_evaluate_role_measures_three_models_on_the_same_prompts_and_judges_in_random_order(tmp_path, data_dir):
    ScriptedModel.loaded = []
    models = _models(tmp_path)
    prompts = evaluate.heldout_prompts("poet")
    ev = evaluate.evaluate_role("poet", models, tmp_path / "out", client=_judge_client("1"),
                                chat_factory=_factory({"base": PROSE, "finetune": VERSE, "gguf": VERSE}),
                                prompts=prompts, log=lambda _: None)
    assert ScriptedModel.loaded == ["base.gguf", "finetune.gguf", "gguf.gguf"]  # one model at a time, once each
    assert ev.means["base"]["verse"] == 0.0 and ev.means["finetune"]["verse"] == 1.0
    assert ev.vs_base["verse"].excludes_zero and not ev.worse_than_base() and not ev.quant_worse()
    assert ev.quant["verse"].diff == 0.0
    j = ev.judge
    # the judge always answers "1": it prefers whichever was shown first; the balanced coin put each model first
    # on half the prompts, so such a judge gives each half the wins, and the summary says it followed the order
    assert j.verdicts == j.asked == len(prompts) and j.first_position_picks == j.verdicts
    assert j.finetune_wins == j.finetune_shown_first == len(prompts) // 2 and "scripted" in j.judge
    assert f"picked the reply shown first in {len(prompts)} of {len(prompts)}" in j.weakness
    firsts = {r["prompt_id"]: r["first"] for r in j.records}
    assert set(firsts.values()) == {"finetune", "base"}
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["prompts"] == len(prompts) and report["finetune_vs_base"]["verse"]["ci_low"] > 0
    md = evaluate.table_markdown(ev)
    assert "| verse (" in md and "*" in md
    from distillery_assets.plots import chart_md

    assert len(chart_md(evaluate.chart(ev))) < 1000
    # a re-run reuses every reply and every verdict (nothing generated or asked twice)
    again = evaluate.evaluate_role("poet", models, tmp_path / "out", client=_judge_client("2"),
                                   chat_factory=_factory({"base": "X", "finetune": "X", "gguf": "X"}),
                                   prompts=prompts, log=lambda _: None)
    assert again.reused_replies == {v: len(prompts) for v in evaluate.VARIANTS}
    assert again.means == ev.means and again.judge.finetune_wins == j.finetune_wins


def test_a_finetune_worse_than_base_beyond_noise_is_flagged_and_too_few_prompts_is_an_error(tmp_path, data_dir):
    models = _models(tmp_path)
    ev = evaluate.evaluate_role("poet", models, tmp_path / "out", client=None,
                                chat_factory=_factory({"base": VERSE, "finetune": PROSE, "gguf": PROSE}),
                                log=lambda _: None)
    assert ev.worse_than_base() and ev.judge is None
    assert "lower than base" in ev.vs_base["verse"].words("fine-tune", "base").replace("fine-tune lower", "lower")
    with pytest.raises(ValueError, match="fewer than min_prompts"):
        evaluate.evaluate_role("poet", models, tmp_path / "o2", chat_factory=_factory({}),
                               prompts=[Prompt("a", "b", "c")], log=lambda _: None)


def test_educator_objective_is_gate_failures_lower_is_better(tmp_path, data_dir):
    models = _models(tmp_path)
    good = 'I keep "counts her change twice": line 2 does the work. Cut the first line and start there.'
    bad = "Great job! Let us delve into it. 8/10."
    ev = evaluate.evaluate_role("educator", models, tmp_path / "out",
                                chat_factory=_factory({"base": good, "finetune": bad, "gguf": bad}), log=lambda _: None)
    assert ev.vs_base["gate_failures"].diff > 0 and ev.worse_than_base()
    assert "voice_break" in evaluate.gate_table_markdown(ev)


# ---- the asset, wired with scripted models ------------------------------------------------------------------

def test_poet_eval_asset_publishes_table_chart_judge_and_checks(tmp_path, data_dir, monkeypatch):
    from assets import poetry
    from tests.support.llm import scripted_llm
    from tests.unit.test_asset_presentation import assert_rendered

    models = _models(tmp_path)
    train = tmp_path / "train.jsonl"
    train.write_text(json.dumps({"messages": [{"role": "user", "content": "an unrelated brief"}]}) + "\n")

    @dg.asset(name="poet_lora")
    def lora():
        return tmp_path

    @dg.asset(name="poet_gguf")
    def gguf():
        return models["gguf"].path

    @dg.asset(name="poet_train")
    def poet_train():
        return train

    @dg.asset(name="base_model")
    def base():
        return tmp_path

    monkeypatch.setattr(evaluate, "prepare_models", lambda base, adapter, g, folder: (models, {"base": True,
                                                                                             "finetune": True}))
    monkeypatch.setattr(evaluate, "default_chat_factory",
                        lambda settings: _factory({"base": PROSE, "finetune": VERSE, "gguf": VERSE}))
    monkeypatch.setattr("distillery_assets.training.base_model.resolve_base", lambda base_model, root: str(tmp_path))
    result = dg.materialize([lora, gguf, poet_train, base, poetry.poet_eval],
                            resources={"llm": scripted_llm(lambda messages, **_: "2")})
    assert result.success
    mats = {e.event_specific_data.materialization.asset_key.to_user_string(): e.event_specific_data.materialization.metadata
            for e in result.get_asset_materialization_events()}
    page = mats["poet_eval"]
    assert page["prompts"].value >= 30 and page["verse_finetune"].value == 1.0 and page["verse_base"].value == 0.0
    assert "scripted" in page["judge_model"].value
    assert page["chart"].value.startswith("![poet on") and len(page["chart"].value) < 1000  # shown in place
    assert_rendered({"poet_eval": page})
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks == {"poet_finetune_not_worse_than_base": True, "poet_gguf_keeps_finetune_quality": True}
    inputs = page["inputs"].value
    assert any(p.endswith("heldout/briefs.txt") for p in inputs) and any(p.endswith("judge_poet.md") for p in inputs)


def test_poet_eval_refuses_a_heldout_brief_found_in_the_training_split(tmp_path, data_dir, monkeypatch):
    from assets import poetry

    brief = evaluate.heldout_prompts("poet")[3].text
    train = tmp_path / "train.jsonl"
    train.write_text(json.dumps({"messages": [{"role": "user", "content": brief}]}) + "\n")
    outs = {"poet_lora": tmp_path, "poet_gguf": tmp_path / "x.gguf", "poet_train": train, "base_model": tmp_path}
    def upstream(name, value):
        @dg.asset(name=name)
        def _asset():
            return value

        return _asset

    ups = [upstream(k, v) for k, v in outs.items()]
    from tests.support.llm import scripted_llm

    result = dg.materialize([*ups, poetry.poet_eval], resources={"llm": scripted_llm(lambda m, **_: "1")},
                            raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure and e.step_key == "poet_eval")
    assert "held-out prompts found in the training split" in str(failure.event_specific_data.error.message)

"""The prompt tables reproduce the users' existing corpus exactly: 165 leaves, 850 prompts, same names."""

import json
from pathlib import Path

import pytest
import yaml

from distillery_assets.corpus.layout import CorpusKind
from distillery_assets.corpus.prompts import all_leaves, leaves_for, render_prompts_txt, write_leaf
from distillery_assets.corpus.tables import PromptTablesError, default_tables, default_tables_path, load_tables

REFERENCE = Path(__file__).resolve().parents[2].parent / "shared" / "reference" / "level4_prompt_tables.json"


def reference_prompts() -> dict[str, str]:
    """prompts.txt contents keyed by leaf relpath, built independently from the reference JSON (seed rules)."""
    ref = json.loads(REFERENCE.read_text())
    out = {}
    for group, spec in ref["story_groups"].items():
        lines = [
            f"{p['file']} Write a short story about {p['theme']}. {spec['style']} Aim for {spec['word_target']} words."
            for p in spec["prompts"]
        ]
        out[f"stories/{group}"] = "\n".join(lines) + "\n"
    for category, subs in ref["encyclopedia"].items():
        for sub in subs:
            topic = f"{sub.replace('-', ' ')} (in the context of {category.replace('-', ' ')})"
            lines = [
                f"{sub.replace('-', '_')}_{a['slug']}.corpus "
                + a["template"].replace("{topic_readable}", topic)
                + " Aim for 800-1200 words."
                for a in ref["article_angles"]
            ]
            out[f"encyclopedia/{category}/{sub}"] = "\n".join(lines) + "\n"
    return out


@pytest.mark.skipif(not REFERENCE.exists(), reason="../shared/reference not beside the checkout")
def test_project_tables_reproduce_reference_prompts_exactly():
    expected = reference_prompts()
    leaves = all_leaves(default_tables())
    got = {str(leaf.relpath): leaf.render() for leaf in leaves}
    assert len(got) == 165
    assert sum(len(leaf.lines) for leaf in leaves) == 850
    assert got == expected


def test_known_examples_and_counts():
    tables = default_tables()
    assert list(tables.story_groups) == ["200-400w", "400-700w", "700-1200w", "1200-1800w", "1800-2500w"]
    assert len(tables.encyclopedia) == 8
    leaves = {str(leaf.relpath): leaf for leaf in leaves_for(tables, CorpusKind.ENCYCLOPEDIA, "science")}
    qm = leaves["encyclopedia/science/quantum-mechanics"]
    names = [line.file for line in qm.lines]
    assert "quantum_mechanics_beginner_guide.corpus" in names
    hist = next(line for line in leaves["encyclopedia/science/physics"].lines if line.file == "physics_history.corpus")
    assert hist.prompt.startswith("Write an encyclopedia article tracing the historical development of physics (in the context of science).")
    assert hist.prompt.endswith(" Aim for 800-1200 words.")
    story = leaves_for(tables, CorpusKind.STORIES, "200-400w")[0].lines[0]
    assert story.file == "lost_kitten.corpus"
    assert story.prompt == (
        "Write a short story about a child who finds a lost kitten and helps it get home. "
        "Use very simple words, short sentences, and gentle repetition. Aim for 200-400 words."
    )


def test_render_has_trailing_newline_and_no_blank_lines():
    leaf = leaves_for(default_tables(), CorpusKind.STORIES, "400-700w")[0]
    text = render_prompts_txt(leaf.lines)
    assert text.endswith(".\n") and "\n\n" not in text and len(text.splitlines()) == 10


def test_write_leaf_rewrites_prompts_but_never_touches_corpus(tmp_path):
    leaf = leaves_for(default_tables(), CorpusKind.STORIES, "200-400w")[0]
    leaf_dir = tmp_path / "stories" / "200-400w"
    leaf_dir.mkdir(parents=True)
    (leaf_dir / "prompts.txt").write_text("stale\n")
    existing = leaf_dir / "lost_kitten.corpus"
    existing.write_text("A story the user paid for.\n")
    first = write_leaf(tmp_path, leaf)
    assert first.changed and first.lines == 10
    assert (leaf_dir / "prompts.txt").read_text() == leaf.render()
    assert existing.read_text() == "A story the user paid for.\n"
    assert write_leaf(tmp_path, leaf).changed is False
    assert sorted(p.name for p in leaf_dir.iterdir()) == ["lost_kitten.corpus", "prompts.txt"]


def test_adding_a_category_is_all_it_takes(tmp_path):
    raw = yaml.safe_load(default_tables_path().read_text())
    raw["encyclopedia"]["cooking"] = ["baking", "food-safety"]
    path = tmp_path / "tables.yaml"
    path.write_text(yaml.safe_dump(raw))
    tables = load_tables(path)
    leaves = leaves_for(tables, CorpusKind.ENCYCLOPEDIA, "cooking")
    assert [str(leaf.relpath) for leaf in leaves] == ["encyclopedia/cooking/baking", "encyclopedia/cooking/food-safety"]
    assert leaves[1].lines[0].file == "food_safety_introduction.corpus"
    assert "food safety (in the context of cooking)" in leaves[1].lines[0].prompt


@pytest.mark.parametrize(
    "mutate, fragment",
    [
        (lambda r: r["story_groups"]["200-400w"]["prompts"][0].update(file="../evil.corpus"), "story_groups.200-400w.prompts.0.file"),
        (lambda r: r["story_groups"]["200-400w"]["prompts"][0].update(file="kitten.txt"), "must be a plain name ending in '.corpus'"),
        (lambda r: r["encyclopedia"]["science"].append("../etc"), "encyclopedia"),
        (lambda r: r["encyclopedia"]["science"].append("physics"), "repeats subcategories ['physics']"),
        (lambda r: r["story_groups"]["200-400w"]["prompts"][1].update(file="lost_kitten.corpus"), "repeats file names"),
        (lambda r: r["article_angles"][0].update(template="no placeholder"), "article_angles.0.template"),
        (lambda r: r["story_groups"]["200-400w"].update(word_target="lots"), "word_target"),
        (lambda r: r["story_groups"]["200-400w"].update(style="Line one.\nLine two."), "style: Value error, must be a single line"),
    ],
)
def test_bad_tables_name_file_and_field(tmp_path, mutate, fragment):
    raw = yaml.safe_load(default_tables_path().read_text())
    mutate(raw)
    path = tmp_path / "tables.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(PromptTablesError) as err:
        load_tables(path)
    assert str(path) in str(err.value) and fragment in str(err.value)

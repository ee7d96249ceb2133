"""Validators for generated exchanges: each rejection reason, and what must pass."""

import pytest

from distillery_assets.paths import repo_root
from distillery_assets.theme import config, keywords
from distillery_assets.theme.validate import AnachronismMatcher, ExampleValidator, QuestionIndex

CFG = repo_root() / "data" / "config" / "theme"
GOOD = ("Like a careful chess player, our collective must weigh every move; science and shared labour "
        "will carry the colony through the long winter ahead.")


@pytest.fixture(scope="module")
def counter():
    return keywords.KeywordCounter(keywords.load_keyword_sets(CFG / "theme_keywords.json"))


@pytest.fixture
def validator(counter):
    terms = config.load_lines(CFG / "anachronisms.txt", "anachronism")
    return ExampleValidator(keywords=counter, anachronisms=AnachronismMatcher(terms))


def test_good_exchange_passes(validator):
    assert validator.check("How should the settlement face the winter?", GOOD) is None


@pytest.mark.parametrize("user,assistant,reason", [
    ("Q?", "", "empty_field"),
    ("Q?", "Too short, comrade.", "response_too_short"),
    ("Q?", GOOD * 5, "response_too_long"),
    ("Q?", GOOD + " <|im_end|>", "chat_template_artifact"),
    ("Q?", "Assistant: " + GOOD, "chat_template_artifact"),
    ("Q?", "**Comrade**, " + GOOD, "markdown"),
    ("Q?", "- " + GOOD, "markdown"),
    ("Q?", GOOD + " Check your email.", "anachronism"),
    ("Q?", GOOD.replace("science", "the computer"), "anachronism"),
    ("Q?", "The weather was pleasant and the tea was warm, and everyone went to bed early that night.",
     "insufficient_theme_keywords"),
])
def test_each_reason(validator, user, assistant, reason):
    verdict = validator.check(user, assistant)
    assert verdict is not None and verdict[0] == reason


def test_anachronisms_are_whole_words_only():
    m = AnachronismMatcher(["app", "ai", "web site", "a.i."])
    assert m.find("an apple and happiness") is None and m.find("said the aide") is None
    assert m.find("use the App now") == "app" and m.find("the web  site") is None and m.find("a web site") == "web site"
    assert m.find("the A.I. spoke") == "a.i."


def test_theme_presence_is_whole_words_not_substrings(validator):
    # "we", "our", "us" inside other words must not count (the seed counted substrings)
    text = "Thus the power of the tower" + " lorem" * 20  # 'power' is a keyword; 'tower' contains none
    verdict = validator.check("Q?", text)
    assert verdict[0] == "insufficient_theme_keywords"


def test_duplicate_and_near_duplicate_questions(validator):
    assert validator.check("What is the purpose of our settlement?", GOOD) is None
    assert validator.check("what is the purpose of our settlement", GOOD)[0] == "duplicate_question"
    assert validator.check("What is the purpose of the settlement?", GOOD)[0] == "near_duplicate_question"
    assert validator.check("How do we choose who leads the expedition?", GOOD) is None


def test_question_index_only_learns_added():
    idx = QuestionIndex(0.8)
    assert idx.match("Why do rivers freeze in winter?") is None
    assert idx.match("Why do rivers freeze in winter?") is None  # match() alone does not remember
    idx.add("Why do rivers freeze in winter?")
    assert idx.match("why do rivers freeze in the winter") == "near_duplicate_question"


def test_config_loaders(tmp_path):
    personas = config.load_personas(CFG / "personas.yaml")
    assert len(personas) >= 20 and len({p.group for p in personas}) == 9
    assert len(config.load_lines(CFG / "query_themes.txt", "query theme")) == 40
    dup = tmp_path / "t.txt"
    dup.write_text("one\n# c\ntwo\nOne\n")
    with pytest.raises(config.ThemeConfigError, match=r"t.txt line 4: .* repeats line 1"):
        config.load_lines(dup, "query theme")
    bad = tmp_path / "p.yaml"
    bad.write_text("groups:\n  core:\n    primary: short\n")
    with pytest.raises(config.ThemeConfigError, match=r"p.yaml: groups.core.primary"):
        config.load_personas(bad)

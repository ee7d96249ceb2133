"""The one sha256 helper and the one YAML loader, and the pipelines' loaders built on them."""

import hashlib

import pytest
from pydantic import BaseModel

from distillery_assets.catalog import fingerprint
from distillery_assets.corpus.tables import PromptTablesError, load_tables
from distillery_assets.io.hashing import iter_blocks, sha256_file, sha256_files, sha256_text
from distillery_assets.io.yamlfile import ConfigFileError, load_yaml, parse_yaml
from distillery_assets.poetry.settings import PoetryConfig, PoetryConfigError
from distillery_assets.theme import config as theme_config


def test_sha256_helpers_match_hashlib_and_the_catalogue(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.bin"
    a.write_bytes(b'{"x": 1}\n' * 1000)
    b.write_bytes(bytes(range(256)) * 9000)  # over two 1 MiB blocks
    assert sha256_file(b) == hashlib.sha256(b.read_bytes()).hexdigest() == fingerprint(b).sha256
    assert sha256_files(a, b) == hashlib.sha256(a.read_bytes() + b.read_bytes()).hexdigest()
    assert [len(block) for block in iter_blocks(b)] == [1 << 20, 1 << 20, 9000 * 256 - (2 << 20)]
    assert fingerprint(a).record_count == 1000
    assert sha256_text("é") == hashlib.sha256("é".encode()).hexdigest()
    assert theme_config.file_digest(a, b) == sha256_files(a, b)[:12]


class Doc(BaseModel):
    name: str
    size: int


def test_yaml_errors_name_the_file_and_field(tmp_path):
    path = tmp_path / "doc.yaml"
    path.write_text("name: x\nsize: big\n")
    with pytest.raises(ConfigFileError, match=r"doc.yaml: profiles.a.size: Input should be a valid integer"):
        load_yaml(path, Doc, prefix="profiles.a")
    with pytest.raises(ConfigFileError, match=r"nope.yaml: config file not found"):
        load_yaml(tmp_path / "nope.yaml")
    with pytest.raises(ConfigFileError, match=r"where.yaml: not valid YAML"):
        parse_yaml("a: [1,", path="where.yaml")


def test_pipeline_loaders_raise_their_own_config_file_errors(tmp_path):
    (tmp_path / "tables.yaml").write_text("story_groups: [\n")
    with pytest.raises(PromptTablesError, match=r"tables.yaml: not valid YAML") as err:
        load_tables(tmp_path / "tables.yaml")
    assert isinstance(err.value, ConfigFileError)
    (tmp_path / "pipeline.yaml").write_text("profiles: {small: [\n")
    with pytest.raises(PoetryConfigError, match=r"pipeline.yaml: not valid YAML"):
        PoetryConfig(tmp_path).pipeline
    (tmp_path / "personas.yaml").write_text("- a list\n")
    with pytest.raises(theme_config.ThemeConfigError, match=r"personas.yaml: field 'groups'"):
        theme_config.load_personas(tmp_path / "personas.yaml")
    with pytest.raises(theme_config.ThemeConfigError, match=r"gone.yaml: personas file not found"):
        theme_config.load_personas(tmp_path / "gone.yaml")

import pytest

from distillery_assets.llm import ConfigError, LLMSettings
from distillery_assets.llm.providers.anthropic_messages import AnthropicProvider
from distillery_assets.llm.providers.fal_router import FalProvider
from distillery_assets.llm.providers.local import LocalProvider
from distillery_assets.llm.providers.openai_compat import OpenAIProvider
from distillery_assets.llm.settings import build_provider


def test_defaults_are_local_and_offline():
    s = LLMSettings.from_env({})
    assert s.provider == "local" and s.effective_concurrency == 1 and s.cache and s.n_ctx == 4096
    assert isinstance(build_provider(s), LocalProvider)


def test_env_variables_are_read_and_typed():
    s = LLMSettings.from_env({
        "DISTILLERY_LLM_PROVIDER": "openai", "DISTILLERY_LLM_MODEL": "qwen/qwen3-235b-a22b",
        "DISTILLERY_LLM_BASE_URL": "https://openrouter.ai/api/v1", "DISTILLERY_LLM_API_KEY_ENV": "OPENROUTER_API_KEY",
        "DISTILLERY_LLM_CONCURRENCY": "16", "DISTILLERY_LLM_RPM": "120", "DISTILLERY_LLM_TPM": "90000",
        "DISTILLERY_LLM_TIMEOUT_S": "30", "DISTILLERY_LLM_CACHE": "0", "DISTILLERY_LLM_JSON_REASKS": "1"})
    assert (s.provider, s.model, s.key_env, s.effective_concurrency, s.rpm, s.tpm, s.timeout_s, s.cache,
            s.json_reasks) == ("openai", "qwen/qwen3-235b-a22b", "OPENROUTER_API_KEY", 16, 120, 90000, 30.0, False, 1)
    provider = build_provider(s)
    assert isinstance(provider, OpenAIProvider) and provider.base_url == "https://openrouter.ai/api/v1"
    assert provider.model_id(None) == "qwen/qwen3-235b-a22b"


@pytest.mark.parametrize("name,cls,key_env", [("openai", OpenAIProvider, "OPENAI_API_KEY"),
                                              ("anthropic", AnthropicProvider, "ANTHROPIC_API_KEY"),
                                              ("fal", FalProvider, "FAL_KEY")])
def test_each_provider_gets_its_default_key_variable(name, cls, key_env):
    provider = build_provider(LLMSettings(provider=name))
    assert isinstance(provider, cls) and provider.api_key_env == key_env


@pytest.mark.parametrize("env", [{"DISTILLERY_LLM_PROVIDER": "gemini"}, {"DISTILLERY_LLM_RPM": "-1"},
                                 {"DISTILLERY_LLM_TIMEOUT_S": "soon"}])
def test_bad_values_name_the_setting(env):
    with pytest.raises(ConfigError, match="DISTILLERY_LLM_"):
        LLMSettings.from_env(env)


def test_local_model_id_names_the_file_and_a_missing_file_is_explained(tmp_path):
    gguf = tmp_path / "poet.Q4_K_M.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 60)
    provider = LocalProvider(gguf)
    assert provider.model_id(None) == "poet.Q4_K_M.gguf#64"
    with pytest.raises(ConfigError, match="DISTILLERY_LLM_GGUF"):
        LocalProvider(tmp_path / "missing.gguf").model_id(None)


def test_docstring_documents_every_setting():
    import distillery_assets.llm.settings as module

    for field in LLMSettings.model_fields:
        assert f"DISTILLERY_LLM_{field.upper()}" in module.__doc__, field

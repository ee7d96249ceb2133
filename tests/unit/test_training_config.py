"""Training profiles: the seed's recipe in `full`, a CPU-sized `cpu_small`, strict validation with clear errors."""

from pathlib import Path

import pytest

from distillery_assets.paths import repo_root
from distillery_assets.training.config import PROFILE_ENV, TrainingConfigError, load_train_config

CONFIGS = repo_root() / "data" / "config" / "training"


@pytest.mark.parametrize("role", ["educator", "poet", "theme"])
def test_full_profile_carries_the_seed_recipe(role):
    cfg = load_train_config(CONFIGS / f"{role}.yaml", "full")
    assert cfg.role == role and cfg.profile == "full"
    assert (cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout) == (64, 128, 0.05)
    assert set(cfg.lora.target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert cfg.learning_rate == 2e-4 and cfg.lr_scheduler == "cosine" and cfg.warmup_ratio == 0.03
    assert (cfg.batch_size, cfg.grad_accum, cfg.weight_decay, cfg.max_grad_norm) == (4, 4, 0.01, 1.0)
    q = cfg.quantization
    assert q.load_in_4bit and q.quant_type == "nf4" and q.double_quant and q.compute_dtype == "bfloat16"
    assert cfg.optimizer == "paged_adamw_8bit" and cfg.needs_cuda
    assert cfg.export.quant == "Q4_K_M" and cfg.export.max_ppl_degradation == 0.05
    assert cfg.base_model != "meta-llama/Llama-3.1-14B-Instruct"  # that model does not exist


def test_seed_epochs_and_lengths_per_role():
    educator, poet = (load_train_config(CONFIGS / f"{r}.yaml", "full") for r in ("educator", "poet"))
    assert (educator.epochs, educator.max_seq) == (4, 1024)
    assert (poet.epochs, poet.max_seq) == (6, 512)


@pytest.mark.parametrize("role", ["educator", "poet", "theme"])
def test_cpu_small_runs_without_a_gpu(role):
    cfg = load_train_config(CONFIGS / f"{role}.yaml", "cpu_small")
    assert not cfg.needs_cuda and cfg.dtype == "float32" and cfg.optimizer == "adamw_torch"
    assert cfg.base_model == "embedded" and cfg.max_seq <= 512 and cfg.max_steps


def test_profile_comes_from_env_then_default(monkeypatch):
    monkeypatch.delenv(PROFILE_ENV, raising=False)
    assert load_train_config(CONFIGS / "poet.yaml").profile == "cpu_small"
    monkeypatch.setenv(PROFILE_ENV, "full")
    assert load_train_config(CONFIGS / "poet.yaml").profile == "full"
    assert load_train_config(CONFIGS / "poet.yaml", "cpu_small").profile == "cpu_small"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    return path


BODY = """role: poet
profiles:
  cpu_small:
    base_model: embedded
    lora: {r: 8, alpha: 16, dropout: 0.0, target_modules: [q_proj]}
    learning_rate: 1.0e-3
    epochs: 1
    batch_size: 2
    max_seq: 64
"""


def test_unknown_key_is_an_error_naming_file_and_field(tmp_path):
    path = _write(tmp_path, BODY + "    learnig_rate: 3\n")
    with pytest.raises(TrainingConfigError, match=r"bad\.yaml.*profiles\.cpu_small\.learnig_rate"):
        load_train_config(path, "cpu_small")


def test_bad_value_names_the_field(tmp_path):
    path = _write(tmp_path, BODY.replace("r: 8", "r: 0"))
    with pytest.raises(TrainingConfigError, match=r"profiles\.cpu_small\.lora\.r"):
        load_train_config(path, "cpu_small")


def test_missing_profile_lists_the_available_ones(tmp_path):
    with pytest.raises(TrainingConfigError, match="no profile 'full'.*cpu_small"):
        load_train_config(_write(tmp_path, BODY), "full")


def test_fingerprint_changes_with_any_setting(tmp_path):
    a = load_train_config(_write(tmp_path, BODY), "cpu_small")
    b = load_train_config(_write(tmp_path, BODY.replace("epochs: 1", "epochs: 2")), "cpu_small")
    assert a.fingerprint() != b.fingerprint()
    assert a.fingerprint() == load_train_config(_write(tmp_path, BODY), "cpu_small").fingerprint()


@pytest.mark.parametrize("role", ["educator", "poet", "theme"])
def test_export_follows_the_seed_pipeline_primary_then_fallbacks(role):
    for profile in ("full", "cpu_small"):
        ex = load_train_config(CONFIGS / f"{role}.yaml", profile).export
        assert ex.candidate_quants == ["Q4_K_M", "Q5_K_M", "Q8_0"] and ex.ppl_max_examples is None
        assert ex.chat_max_tokens and ex.chat_max_tokens >= 512
        if role != "theme":
            assert (CONFIGS / ex.heldout_text).is_file()


def test_an_unknown_fallback_quant_is_an_error_naming_the_field(tmp_path):
    path = _write(tmp_path, BODY + "    export: {fallback_quants: [Q5_K_M, Q9_X]}\n")
    with pytest.raises(TrainingConfigError, match=r"export.*fallback_quants.*Q9_X|Q9_X.*fallback_quants"):
        load_train_config(path, "cpu_small")

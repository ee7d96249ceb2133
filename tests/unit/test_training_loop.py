"""The shared training loop on a tiny from-scratch torch model (no LoRA, no tokenizer, no transformers model):
it learns, writes its history, checkpoints, and an interrupted run resumes where it stopped and ends
exactly where an uninterrupted run ends."""

import json
import math
import os
import random
import subprocess
import sys
from types import SimpleNamespace

import pytest

from distillery_assets.training.chat_data import IGNORE, Example
from distillery_assets.training.config import LoopConfig
from distillery_assets.training.loop import (
    CHECKPOINT_STATE, HISTORY_FILE, Checkpoints, History, evaluate_loss, plan_steps, train_loop,
)

torch = pytest.importorskip("torch")
VOCAB = 12


class TinyLM(torch.nn.Module):
    """Next token = f(current token): embedding + linear head, the smallest causal LM there is."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(VOCAB, 16)
        self.head = torch.nn.Linear(16, VOCAB)

    def forward(self, input_ids, attention_mask):
        return SimpleNamespace(logits=self.head(self.embed(input_ids)))


def _examples(n: int, seed: int) -> list[Example]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        start = rng.randrange(1, VOCAB)
        ids = [(start + k) % VOCAB for k in range(6)]  # counting: each token is the previous plus one
        out.append(Example(ids, [IGNORE] + ids[1:], f"synthetic:{i}"))
    return out


def _cfg(**over) -> LoopConfig:
    body = dict(role="thyme", profile="test", learning_rate=0.05, epochs=3, batch_size=4, max_seq=16,
                lr_scheduler="constant", checkpoint_every=2, seed=3)
    body.update(over)
    return LoopConfig.model_validate(body)


def _fresh_model():
    torch.manual_seed(0)
    return TinyLM()


def test_a_from_scratch_config_has_no_lora_section_and_the_loop_learns(tmp_path):
    cfg = _cfg()
    assert not hasattr(cfg, "lora") and not cfg.needs_cuda
    train, val = _examples(16, 1), _examples(8, 2)
    model = _fresh_model()
    before = evaluate_loss(model, val, batch_size=4, pad_id=0, device="cpu")
    seen = []
    run = train_loop(model, train, val, cfg, device="cpu", pad_id=0, progress=seen.append)
    assert run.steps == plan_steps(16, cfg) == 12 and [p.step for p in seen] == list(range(1, 13))
    assert run.history.epochs[-1]["val_loss"] < before / 2
    assert [e["steps"] for e in run.history.epochs] == [4, 8, 12]
    assert run.resumed_from_step == 0 and run.tokens_per_s > 0
    path = run.history.write(tmp_path / HISTORY_FILE)
    assert History.read(path) == run.history and len(json.loads(path.read_text())["steps"]) == 12


def test_interrupted_run_resumes_from_its_checkpoint_and_ends_like_an_uninterrupted_one(tmp_path):
    cfg = _cfg()
    train, val = _examples(16, 1), _examples(8, 2)

    straight = _fresh_model()
    expected = train_loop(straight, train, val, cfg, device="cpu", pad_id=0, progress=None)

    class Crash(Exception):
        pass

    def crash_at_step_7(p):
        if p.step == 7:
            raise Crash

    checkpoints = Checkpoints(tmp_path / "ckpt", fingerprint="run-a")
    with pytest.raises(Crash):
        train_loop(_fresh_model(), train, val, cfg, device="cpu", pad_id=0, checkpoints=checkpoints,
                   progress=crash_at_step_7)
    state = json.loads((tmp_path / "ckpt" / CHECKPOINT_STATE).read_text())
    assert state["step"] == 6 and state["epoch"] == 2 and state["groups_done"] == 2  # mid-epoch checkpoint

    # a checkpoint of other settings or data is ignored
    assert Checkpoints(tmp_path / "ckpt", fingerprint="run-b").load(None, None, None) is None

    steps = []
    resumed_model = _fresh_model()
    resumed = train_loop(resumed_model, train, val, cfg, device="cpu", pad_id=0, checkpoints=checkpoints,
                         progress=lambda p: steps.append(p.step))
    assert resumed.resumed_from_step == 6 and steps == list(range(7, 13))  # the step counter continues
    assert resumed.steps == 12
    assert [s["step"] for s in resumed.history.steps] == list(range(1, 13))  # history carried over
    for key in ("val_loss", "train_loss"):
        assert [e[key] for e in resumed.history.epochs] == pytest.approx(
            [e[key] for e in expected.history.epochs], rel=1e-6)
    for a, b in zip(resumed_model.parameters(), straight.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_nothing_trainable_is_an_error():
    model = _fresh_model()
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="no parameters that require gradients"):
        train_loop(model, _examples(4, 1), _examples(4, 2), _cfg(), device="cpu", pad_id=0, progress=None)


def test_epoch_records_carry_perplexity_lr_speed_and_the_hook_and_best_keeps_the_lowest_val_loss(tmp_path):
    from distillery_assets.training.loop import BEST_STATE, load_best

    cfg = _cfg(lr_scheduler="cosine")
    train, val = _examples(16, 1), _examples(8, 2)
    calls = []

    def hook(model, epoch):
        calls.append((epoch, model.training))
        return {"probe": float(epoch) * 10}

    model = _fresh_model()
    run = train_loop(model, train, val, cfg, device="cpu", pad_id=0, progress=None, on_epoch_end=hook,
                     best_dir=tmp_path / "best")
    assert calls == [(1, False), (2, False), (3, False)] and model.training  # eval mode only during the hook
    for e in run.history.epochs:
        assert e["probe"] == e["epoch"] * 10
        assert e["val_ppl"] == pytest.approx(math.exp(e["val_loss"]))
        assert e["train_ppl"] == pytest.approx(math.exp(e["train_loss"]))
        assert e["lr"] >= 0 and e["tokens_per_s"] > 0
    assert all(s["ppl"] == pytest.approx(math.exp(s["loss"])) and "lr" in s and "tokens_per_s" in s
               for s in run.history.steps)
    best_epoch = min(run.history.epochs, key=lambda e: e["val_loss"])
    record = json.loads((tmp_path / "best" / BEST_STATE).read_text())
    assert record["epoch"] == best_epoch["epoch"] and record["val_loss"] == best_epoch["val_loss"]
    restored = _fresh_model()
    assert load_best(tmp_path / "best", restored)["epoch"] == best_epoch["epoch"]
    assert evaluate_loss(restored, val, batch_size=4, pad_id=0, device="cpu") == pytest.approx(
        best_epoch["val_loss"], rel=1e-5)


def test_bf16_autocast_runs_the_forward_in_bf16_and_still_learns():
    cfg = _cfg(autocast="bf16")
    train, val = _examples(16, 1), _examples(8, 2)
    model = _fresh_model()
    before = evaluate_loss(model, val, batch_size=4, pad_id=0, device="cpu")
    seen_dtypes = []
    model.head.register_forward_hook(lambda mod, args, out: seen_dtypes.append(out.dtype))
    run = train_loop(model, train, val, cfg, device="cpu", pad_id=0, progress=None)
    # per epoch: 4 training forwards in bf16, then 2 validation forwards in fp32; the weights stay fp32
    epoch = [torch.bfloat16] * 4 + [torch.float32] * 2
    assert seen_dtypes == epoch * cfg.epochs
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert run.history.epochs[-1]["val_loss"] < before / 2


def test_fp16_autocast_needs_cuda_and_an_unset_autocast_keeps_old_fingerprints():
    with pytest.raises(ValueError, match="fp16 needs CUDA"):
        train_loop(_fresh_model(), _examples(4, 1), _examples(4, 2), _cfg(autocast="fp16"), device="cpu", pad_id=0)
    plain, mixed = _cfg(), _cfg(autocast="bf16")
    assert "autocast" in plain.model_dump() and plain.fingerprint() != mixed.fingerprint()
    from distillery_assets.io.hashing import sha256_text
    body = plain.model_dump(exclude={"checkpoint_every", "autocast", "patience"})  # the body before both existed
    assert plain.fingerprint() == sha256_text(json.dumps(body, sort_keys=True))[:16]


FREED = """
import ctypes, sys
from distillery_assets.training.loop import keep_freed_memory
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
kept = keep_freed_memory()
size = 200 << 20
block = libc.malloc(size)
ctypes.memset(block, 1, size)
libc.free(block)
rss = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS:")) // 1024
print(kept, rss)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_cpu_training_keeps_freed_memory_for_reuse_unless_told_not_to():
    """After keep_freed_memory() a freed 200 MB block stays in the process (the next step reuses it instead of
    the kernel zero-filling fresh pages); with DISTILLERY_SYSTEM_MALLOC=1 glibc's defaults hand it back."""
    def run(**env):
        out = subprocess.run([sys.executable, "-c", FREED], capture_output=True, text=True, check=True, timeout=60,
                             env={**os.environ, **env}).stdout.split()
        return out[0] == "True", int(out[1])

    kept, rss_kept = run(DISTILLERY_SYSTEM_MALLOC="0")
    default, rss_default = run(DISTILLERY_SYSTEM_MALLOC="1")
    assert kept and not default
    assert rss_kept - rss_default > 150, (rss_kept, rss_default)


def _backwards(n: int, seed: int) -> list[Example]:
    """Counting down: what a model that learns to count up gets worse at, epoch after epoch."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        start = rng.randrange(1, VOCAB)
        ids = [(start - k) % VOCAB for k in range(6)]
        out.append(Example(ids, [IGNORE] + ids[1:], f"backwards:{i}"))
    return out


def test_patience_stops_a_run_that_no_longer_improves_and_a_later_run_without_it_carries_on(tmp_path):
    cfg = _cfg(epochs=6, lr_scheduler="cosine")
    train, val = _examples(16, 1), _backwards(8, 2)
    straight = _fresh_model()
    expected = train_loop(straight, train, val, cfg, device="cpu", pad_id=0, progress=None)
    val_losses = [e["val_loss"] for e in expected.history.epochs]
    best = 1 + val_losses.index(min(val_losses))
    assert best <= 3, val_losses  # the setting of this test: validation stops improving early

    checkpoints = Checkpoints(tmp_path / "ckpt", fingerprint="run-a")
    patient = cfg.model_copy(update={"patience": 2})
    assert patient.fingerprint() == cfg.fingerprint()  # where a run stops is not what it computes
    stopped = train_loop(_fresh_model(), train, val, patient, device="cpu", pad_id=0, checkpoints=checkpoints,
                         progress=None)
    assert stopped.stopped_early == {"epoch": best + 2, "best_epoch": best, "patience": 2}
    assert len(stopped.history.epochs) == best + 2 and stopped.steps == 4 * (best + 2)
    # each epoch it ran is the full run's (the schedule is planned for all six)
    assert [e["val_loss"] for e in stopped.history.epochs] == pytest.approx(val_losses[: best + 2], rel=1e-6)
    assert json.loads((tmp_path / "ckpt" / CHECKPOINT_STATE).read_text())["step"] == stopped.steps  # kept

    carried_model = _fresh_model()
    carried = train_loop(carried_model, train, val, cfg, device="cpu", pad_id=0, checkpoints=checkpoints,
                         progress=None)
    assert carried.resumed_from_step == stopped.steps and carried.steps == expected.steps
    assert carried.stopped_early is None
    assert [e["val_loss"] for e in carried.history.epochs] == pytest.approx(val_losses, rel=1e-6)
    for a, b in zip(carried_model.parameters(), straight.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def _tiny_llama(lora: bool):
    """A real ``LlamaForCausalLM`` small enough for a unit test, with LoRA adapters when asked (as lora.py)."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    model = transformers.LlamaForCausalLM(config)
    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                                                 init_lora_weights=False))  # non-zero B: the adapters matter
    return model


def _chat_batch(rows: int = 3, width: int = 20):
    """Prompt tokens unlabelled, reply tokens labelled, right padding: the shape chat_data.collate makes."""
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 97, (rows, width), generator=gen)
    mask = torch.ones_like(ids)
    labels = torch.full_like(ids, IGNORE)
    for r, (start, end) in enumerate([(8, 20), (5, 14), (12, 17)][:rows]):
        labels[r, start:end] = ids[r, start:end]
        mask[r, end:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _full_logits_nll(model, batch):
    """The reference: every position's logits from the model's own forward, then the labelled ones."""
    import torch.nn.functional as F

    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), batch["labels"][:, 1:].reshape(-1),
                           ignore_index=IGNORE, reduction="sum")


@pytest.mark.parametrize("lora", [False, True])
def test_the_output_head_runs_on_label_positions_only_with_the_same_loss_and_gradients(lora):
    from distillery_assets.training.loop import token_nll

    model = _tiny_llama(lora)
    batch = _chat_batch()
    rows_seen = []
    head = (model.get_base_model() if lora else model).get_output_embeddings()
    hook = head.register_forward_hook(lambda mod, args, out: rows_seen.append(args[0].reshape(-1, 32).shape[0]))
    try:
        nll, n = token_nll(model, batch)
    finally:
        hook.remove()
    labelled = int((batch["labels"][:, 1:] != IGNORE).sum())
    assert n == labelled and rows_seen == [labelled]  # not 3 x 19 positions

    trainable = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(nll, trainable)
    ref = _full_logits_nll(model, batch)
    ref_grads = torch.autograd.grad(ref, trainable)
    assert float(nll.detach()) == pytest.approx(float(ref.detach()), rel=1e-5)
    for g, r in zip(grads, ref_grads):
        assert torch.allclose(g, r, rtol=1e-4, atol=1e-6)


def test_a_batch_labelled_everywhere_and_other_models_take_every_logit():
    from distillery_assets.training.loop import token_nll

    model = _tiny_llama(False)
    batch = _chat_batch()
    batch["labels"] = batch["input_ids"].clone()  # a from-scratch LM: every next token is a label
    rows_seen = []
    hook = model.get_output_embeddings().register_forward_hook(
        lambda mod, args, out: rows_seen.append(args[0].reshape(-1, 32).shape[0]))
    try:
        nll, n = token_nll(model, batch)
    finally:
        hook.remove()
    assert rows_seen == [3 * 20] and n == 3 * 19
    assert float(nll) == pytest.approx(float(_full_logits_nll(model, batch)), rel=1e-6)

    tiny = _fresh_model()  # not a LlamaForCausalLM: its own forward, as before
    ids = torch.tensor([[1, 2, 3, 4]])
    nll, n = token_nll(tiny, {"input_ids": ids, "attention_mask": torch.ones_like(ids),
                              "labels": torch.tensor([[IGNORE, IGNORE, 3, 4]])})
    assert n == 2 and float(nll) > 0

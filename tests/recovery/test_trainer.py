"""RecoveryConfig / RecoveryTrainer on tiny random Llamas with the offline byte-level tokenizer."""

import copy

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from fixtures import tiny_llama, tiny_tokenizer
from peft import LoraConfig, PeftModel
from transformers import LlamaConfig, LlamaForCausalLM
from trl import SFTConfig, SFTTrainer

from paser_hf import RecoveryConfig, RecoveryTrainer, merge_adapters_keep_sparsity
from paser_hf.formatting import to_trl_dataset
from paser_hf.recovery.losses import distillation_loss

COMMON = {
    "use_cpu": True, "bf16": False, "report_to": "none", "save_strategy": "no", "logging_steps": 1,
    "per_device_train_batch_size": 4, "max_length": 64, "activation_checkpointing": False,
    "dataloader_num_workers": 0, "seed": 0, "disable_tqdm": True,
}
ALPACA = [
    {"instruction": f"List {i} colours.", "input": "" if i % 2 else f"about {i}", "output": f"red, blue and {i} more"}
    for i in range(8)
]


def recovery_config(tmp_path, **kwargs):
    return RecoveryConfig(output_dir=str(tmp_path), **{**COMMON, **kwargs})


def tied_llama(vocab_size=261, seed=0):
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, tie_word_embeddings=True, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )
    return LlamaForCausalLM(config).eval()


def pruned(model, ratio=0.5):
    """Per-row magnitude pruning of the decoder Linear weights (zeros, no structural change)."""
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Linear) and ".layers." in name:
                w = module.weight
                k = int(w.size(1) * ratio)
                idx = w.abs().argsort(dim=1)[:, :k]
                w.scatter_(1, idx, 0.0)
    return model


def peaked(model, seed=0, std=0.2):
    """Larger random weights than the default init, so the next-token distributions are far from uniform."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=gen) * std)
    return model


def lora(**kwargs):
    return LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear", **kwargs)


def first_batch(trainer):
    return next(iter(trainer.get_train_dataloader()))


def full_logits(model, batch):
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def reference_ce(logits, labels):
    return F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)


# Configuration


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"kd_alpha": 1.5}, "kd_alpha"),
        ({"kd_alpha": -0.1}, "kd_alpha"),
        ({"kd_temperature": 0.0}, "kd_temperature"),
        ({"kd_loss": "tvd"}, "kd_loss"),
        ({"kd_jsd_beta": 1.0}, "kd_jsd_beta"),
        ({"kd_schedule": "kd_then_sft"}, "kd_alpha > 0"),
        ({"kd_alpha": 1.0, "kd_schedule": "kd_then_sft", "kd_stage_ratio": 1.0}, "kd_stage_ratio"),
    ],
)
def test_config_rejects_bad_values(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        recovery_config(tmp_path, **kwargs)


def test_config_fields_have_help():
    names = ["kd_alpha", "kd_temperature", "kd_loss", "kd_jsd_beta", "kd_chunk_size", "kd_schedule",
             "kd_stage_ratio", "teacher_model_name_or_path", "teacher_model_init_kwargs"]
    fields = RecoveryConfig.__dataclass_fields__
    assert all(fields[n].metadata.get("help") for n in names)


# Construction errors


def test_missing_teacher_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="needs a teacher"):
        RecoveryTrainer(model=tiny_llama(), args=recovery_config(tmp_path, kd_alpha=0.5),
                        train_dataset=Dataset.from_list(ALPACA), processing_class=tiny_tokenizer())


def test_teacher_with_fewer_ids_than_the_tokenizer_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="tokenizer"):
        RecoveryTrainer(model=tiny_llama(), teacher_model=tiny_llama(vocab_size=200),
                        args=recovery_config(tmp_path, kd_alpha=0.5),
                        train_dataset=Dataset.from_list(ALPACA), processing_class=tiny_tokenizer())


def test_teacher_with_another_tokenizer_is_an_error(tmp_path):
    other = tiny_tokenizer()
    other.add_tokens(["<extra>"])
    teacher_dir = tmp_path / "teacher"
    tiny_llama(vocab_size=len(other)).save_pretrained(teacher_dir)
    other.save_pretrained(teacher_dir)
    with pytest.raises(ValueError, match="tokenizer.*differs"):
        RecoveryTrainer(model=tiny_llama(), args=recovery_config(tmp_path, kd_alpha=0.5,
                                                                 teacher_model_name_or_path=str(teacher_dir)),
                        train_dataset=Dataset.from_list(ALPACA), processing_class=tiny_tokenizer())


# Losses


def test_kd_alpha_zero_is_exactly_sft(tmp_path):
    tok = tiny_tokenizer()
    data = to_trl_dataset(Dataset.from_list(ALPACA), tok)
    sft = SFTTrainer(model=tiny_llama(seed=3), args=SFTConfig(output_dir=str(tmp_path / "sft"), **COMMON),
                     train_dataset=data, processing_class=tok, peft_config=lora())
    rec = RecoveryTrainer(model=tiny_llama(seed=3), teacher_model=tiny_llama(seed=4),
                          args=recovery_config(tmp_path / "rec", kd_alpha=0.0, chunked_ce=False),
                          train_dataset=Dataset.from_list(ALPACA), processing_class=tok, peft_config=lora())
    chunked = RecoveryTrainer(model=tiny_llama(seed=3), args=recovery_config(tmp_path / "chunked", kd_alpha=0.0),
                              train_dataset=Dataset.from_list(ALPACA), processing_class=tok, peft_config=lora())
    assert rec.teacher_model is None and chunked.args.chunked_ce  # the CPU default
    batch = first_batch(sft)
    assert torch.equal(batch["labels"], first_batch(rec)["labels"])
    with torch.no_grad():
        want = sft.compute_loss(sft.model, dict(batch))
        got = rec.compute_loss(rec.model, dict(batch))
        from_hidden_states = chunked.compute_loss(chunked.model, dict(batch))
    assert torch.equal(got, want)  # trl's own path
    assert torch.allclose(from_hidden_states, want, rtol=1e-5)  # the same sum, added in another order


def test_the_callers_tokenizer_is_left_as_it_was(tmp_path):
    """trl sets pad_token on the tokenizer it trains with; the caller's must not change (PASER's caches are keyed
    by its hash, so a selection after training would score everything again)."""
    from datasets.fingerprint import Hasher

    tok = tiny_tokenizer(pad_token=False)
    before = Hasher.hash(tok)
    trainer = RecoveryTrainer(model=tiny_llama(seed=3), args=recovery_config(tmp_path, kd_alpha=0.0),
                              train_dataset=Dataset.from_list(ALPACA), processing_class=tok, peft_config=lora())
    assert tok.pad_token is None and Hasher.hash(tok) == before
    assert trainer.processing_class.pad_token == tok.eos_token


def chat_rows():
    return [{"messages": [{"role": "user", "content": f"hi {i}"}, {"role": "assistant", "content": f"hello {i}!"}]}
            for i in range(4)]


@pytest.mark.parametrize(
    "student_factory, data, teacher_vocab",
    [
        (tied_llama, Dataset.from_list(ALPACA), 261),
        (tiny_llama, Dataset.from_list([{"prompt": "Q: 2+2?", "completion": " A: 4"}] * 4), 272),
        (tiny_llama, Dataset.from_list(chat_rows()), 261),
        (tiny_llama, Dataset.from_list([{"text": f"plain text number {i}"} for i in range(4)]), 261),
    ],
    ids=["alpaca-tied-lora", "prompt-completion-padded-vocab", "conversational", "text"],
)
def test_kd_sees_the_real_logits(tmp_path, student_factory, data, teacher_vocab):
    """The loss equals (1 - a) CE + a KD computed from the models' ordinary full logits, whatever trl's SFT path."""
    teacher = tiny_llama(vocab_size=teacher_vocab, seed=1)
    args = recovery_config(tmp_path, kd_alpha=0.3, kd_temperature=2.0, kd_loss="jsd", kd_chunk_size=5)
    trainer = RecoveryTrainer(model=student_factory(seed=2), teacher_model=teacher, args=args, train_dataset=data,
                              processing_class=tiny_tokenizer(), peft_config=lora())
    with torch.no_grad():  # a non-zero LoRA update, so the adapters take part in the forward
        for name, p in trainer.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    batch = first_batch(trainer)
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, dict(batch))
    student_logits = full_logits(trainer.model, batch)
    teacher_logits = full_logits(teacher, batch)
    kd = distillation_loss(student_logits[..., :261], teacher_logits[..., :261], batch["labels"], "jsd", 2.0, 0.5)
    want = 0.7 * reference_ce(student_logits, batch["labels"]) + 0.3 * kd
    torch.testing.assert_close(loss, want, rtol=1e-5, atol=1e-6)


def test_staged_schedule_switches_between_kd_and_sft(tmp_path):
    args = recovery_config(tmp_path, kd_alpha=1.0, kd_schedule="kd_then_sft", kd_stage_ratio=0.4)
    trainer = RecoveryTrainer(model=tiny_llama(seed=2), teacher_model=tiny_llama(), args=args,
                              train_dataset=Dataset.from_list(ALPACA), processing_class=tiny_tokenizer())
    trainer.state.max_steps = 10
    trainer.state.global_step = 3
    assert trainer.current_kd_alpha() == 1.0
    trainer.state.global_step = 4
    assert trainer.current_kd_alpha() == 0.0
    trainer.args.kd_schedule = "sft_then_kd"
    assert trainer.current_kd_alpha() == 1.0


# Training


def test_pure_kd_recovers_the_pruned_student_and_leaves_the_teacher_alone(tmp_path):
    teacher = peaked(tiny_llama(seed=0))
    student = pruned(copy.deepcopy(teacher))
    teacher_state = {k: v.clone() for k, v in teacher.state_dict().items()}
    args = recovery_config(tmp_path, kd_alpha=1.0, max_steps=8, learning_rate=1e-2, activation_checkpointing=True,
                           kd_chunk_size=32)
    trainer = RecoveryTrainer(model=student, teacher_model=teacher, args=args,
                              train_dataset=Dataset.from_list(ALPACA), processing_class=tiny_tokenizer(),
                              peft_config=lora())
    batches = [b for b in trainer.get_train_dataloader()]

    def kl_on_training_rows():
        trainer.model.eval()
        total = sum(distillation_loss(full_logits(trainer.model, b), full_logits(teacher, b), b["labels"]).item()
                    for b in batches)
        return total / len(batches)

    before = kl_on_training_rows()
    trainer.train()
    after = kl_on_training_rows()
    assert after < 0.5 * before

    assert trainer.teacher_model is teacher and not teacher.training
    assert all(not p.requires_grad and p.grad is None for p in teacher.parameters())
    assert all(torch.equal(v, teacher_state[k]) for k, v in teacher.state_dict().items())
    assert {"kd_loss", "ce_loss"} <= set(trainer.state.log_history[0])

    trainer.save_model(str(tmp_path / "adapter"))
    reloaded = PeftModel.from_pretrained(pruned(peaked(tiny_llama(seed=0))), str(tmp_path / "adapter")).eval()
    batch = batches[0]
    torch.testing.assert_close(full_logits(reloaded, batch), full_logits(trainer.model, batch))

    trainer.create_model_card(model_name="recovered")
    card = (tmp_path / "README.md").read_text()
    assert "2502.12594" in card and "PASER" in card

    dense = copy.deepcopy(trainer.model).merge_and_unload()
    sparse = merge_adapters_keep_sparsity(trainer.model)
    q_pruned = pruned(peaked(tiny_llama(seed=0))).model.layers[0].self_attn.q_proj.weight
    zeros = q_pruned == 0
    assert zeros.float().mean() >= 0.5
    assert (sparse.model.layers[0].self_attn.q_proj.weight[zeros] == 0).all()
    assert (dense.model.layers[0].self_attn.q_proj.weight[zeros] != 0).any()


# ------------------------------------------------------------------------------------ CPU defaults and bf16 autocast
@pytest.mark.parametrize("native", [True, False])
def test_cpu_defaults_autocast_where_bf16_is_native_and_skip_checkpointing(tmp_path, monkeypatch, native):
    monkeypatch.setattr("paser_hf.recovery.config.cpu_only", lambda: True)
    monkeypatch.setattr("paser_hf.recovery.config.native_bf16", lambda device: native)
    config = RecoveryConfig(output_dir=str(tmp_path), report_to="none")
    assert (config.use_cpu, config.bf16, config.gradient_checkpointing) == (True, native, False)
    assert config.activation_checkpointing is False
    explicit = RecoveryConfig(output_dir=str(tmp_path), report_to="none", bf16=False, gradient_checkpointing=True)
    assert (explicit.bf16, explicit.gradient_checkpointing, explicit.activation_checkpointing) == (False, True, True)


def test_with_an_accelerator_the_defaults_are_trls(tmp_path, monkeypatch):
    monkeypatch.setattr("paser_hf.recovery.config.cpu_only", lambda: False)
    config = RecoveryConfig(output_dir=str(tmp_path), report_to="none", use_cpu=False, bf16=False)
    assert config.gradient_checkpointing is True and config.use_cpu is False
    assert SFTConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True, bf16=False).gradient_checkpointing


def loss_and_lora_grads(tmp_path, bf16, kd_alpha):
    """Loss and LoRA gradients of one batch through the prepared model, as a training step computes them."""
    torch.manual_seed(0)
    teacher = peaked(tied_llama(seed=1), seed=1)
    student = pruned(copy.deepcopy(teacher))
    config = recovery_config(tmp_path / str(bf16), bf16=bf16, kd_alpha=kd_alpha)
    trainer = RecoveryTrainer(model=student, teacher_model=teacher if kd_alpha else None, args=config,
                              train_dataset=Dataset.from_list(ALPACA), processing_class=tiny_tokenizer(),
                              peft_config=lora(init_lora_weights=False))
    model = trainer.accelerator.prepare_model(trainer.model)
    return lora_loss_and_grads(trainer, model, first_batch(trainer), trainer.compute_loss_context_manager)


@pytest.mark.parametrize("kd_alpha", [0.0, 0.5])
def test_bf16_autocast_keeps_loss_and_gradients_within_bf16_tolerance(tmp_path, kd_alpha):
    loss32, grads32 = loss_and_lora_grads(tmp_path, False, kd_alpha)
    loss16, grads16 = loss_and_lora_grads(tmp_path, True, kd_alpha)
    assert loss16.dtype == torch.float32
    assert torch.allclose(loss16, loss32, rtol=2e-2)  # bf16 keeps 8 bits of mantissa: ~0.4% per product
    cosine = F.cosine_similarity(grads16, grads32, dim=0)
    assert cosine > 0.99 and (grads16.norm() / grads32.norm() - 1).abs() < 0.05
    assert not torch.equal(grads16, grads32)  # the autocast did run in bf16


def test_chunked_ce_gives_trls_loss_and_gradients(tmp_path):
    """SFT through the chunked head on the completion tokens equals trl's fused-head loss in float32."""
    results = {}
    for chunked in (False, True):
        torch.manual_seed(0)
        student = pruned(peaked(tied_llama(seed=1), seed=1))
        config = recovery_config(tmp_path / str(chunked), chunked_ce=chunked, kd_chunk_size=5)
        trainer = RecoveryTrainer(model=student, args=config, train_dataset=Dataset.from_list(ALPACA),
                                  processing_class=tiny_tokenizer(), peft_config=lora(init_lora_weights=False))
        model = trainer.accelerator.prepare_model(trainer.model)
        batch = first_batch(trainer)
        loss = trainer.compute_loss(model, dict(batch))
        loss.backward()
        grads = torch.cat([p.grad.flatten() for n, p in model.named_parameters() if "lora_" in n])
        reference = reference_ce(full_logits(model, batch), batch["labels"])
        results[chunked] = (loss.detach(), grads, reference, trainer._metrics["train"])
    (loss_trl, grads_trl, reference, trl_metrics), (loss_ours, grads_ours, _, our_metrics) = results[False], results[True]
    assert torch.allclose(loss_ours, reference, rtol=1e-5) and torch.allclose(loss_trl, reference, rtol=1e-5)
    assert torch.allclose(grads_ours, grads_trl, rtol=1e-4, atol=1e-6)
    assert "entropy" in trl_metrics and "entropy" not in our_metrics and "kd_loss" not in our_metrics
    assert our_metrics["ce_loss"][-1] == pytest.approx(loss_ours.item(), rel=1e-5)


def test_chunked_ce_leaves_dft_to_trl(tmp_path):
    config = recovery_config(tmp_path, chunked_ce=True, loss_type="dft")
    trainer = RecoveryTrainer(model=tied_llama(), args=config, train_dataset=Dataset.from_list(ALPACA),
                              processing_class=tiny_tokenizer(), peft_config=lora())
    assert config.chunked_ce and not trainer.uses_chunked_ce()


def lora_loss_and_grads(trainer, model, batch, context):
    model.zero_grad()
    with context():
        loss = trainer.compute_loss(model, dict(batch))
    loss.backward()
    return loss.detach(), torch.cat([p.grad.flatten() for n, p in model.named_parameters() if "lora_" in n])


def bf16_lora_trainer(tmp_path, kd_alpha):
    """The teacher, a LoRA trainer under bf16 autocast (with the teacher when ``kd_alpha > 0``), its prepared model and
    its first batch."""
    torch.manual_seed(0)
    teacher = peaked(tied_llama(seed=1), seed=1)
    student = pruned(copy.deepcopy(teacher))
    trainer = RecoveryTrainer(model=student, teacher_model=teacher if kd_alpha else None,
                              args=recovery_config(tmp_path, bf16=True, kd_alpha=kd_alpha),
                              train_dataset=Dataset.from_list(ALPACA), processing_class=tiny_tokenizer(),
                              peft_config=lora(init_lora_weights=False))
    return teacher, trainer, trainer.accelerator.prepare_model(trainer.model), first_batch(trainer)


@pytest.mark.parametrize("kd_alpha", [0.0, 0.5])
def test_peft_input_casting_is_off_under_autocast_with_the_same_loss_and_gradients(tmp_path, kd_alpha):
    """PEFT casts each LoRA input to float32 and autocast casts it back: skipping both changes no value."""
    from contextlib import nullcontext

    _, trainer, model, batch = bf16_lora_trainer(tmp_path, kd_alpha)
    layers = [m for m in model.modules() if hasattr(m, "cast_input_dtype_enabled")]
    with trainer.compute_loss_context_manager():
        assert layers and not any(m.cast_input_dtype_enabled for m in layers)
    assert all(m.cast_input_dtype_enabled for m in layers)
    without_casts = lora_loss_and_grads(trainer, model, batch, trainer.compute_loss_context_manager)
    with_casts = lora_loss_and_grads(trainer, model, batch, nullcontext)
    assert torch.equal(without_casts[0], with_casts[0]) and torch.equal(without_casts[1], with_casts[1])


@pytest.mark.parametrize("kd_alpha", [0.0, 0.5])
def test_frozen_weights_cast_once_give_the_same_loss_and_gradients(tmp_path, monkeypatch, kd_alpha):
    """Under bf16 autocast on CPU the teacher and the LoRA student run with their frozen Linear weights cast once
    (`FrozenCasts`): the same loss and LoRA gradients as autocast casting them at each forward; both models keep
    their float32 weights."""
    teacher, trainer, model, batch = bf16_lora_trainer(tmp_path, kd_alpha)
    # 7 Linear per layer and the tied head; the student's LoRA matrices are trained, so not cast
    assert len(trainer._frozen_parameters(model)) == 2 * 7 + 1
    if kd_alpha:
        assert len(trainer._frozen_parameters(trainer.teacher_model)) == 2 * 7 + 1
    cast_once = lora_loss_and_grads(trainer, model, batch, trainer.compute_loss_context_manager)
    monkeypatch.setattr(trainer, "_frozen_parameters", lambda model: {})
    cast_each_time = lora_loss_and_grads(trainer, model, batch, trainer.compute_loss_context_manager)
    assert torch.equal(cast_once[0], cast_each_time[0]) and torch.equal(cast_once[1], cast_each_time[1])
    assert all(p.dtype == torch.float32 for p in [*teacher.parameters(), *model.parameters()])


@pytest.mark.parametrize("kd_alpha", [0.0, 0.5])
def test_the_hidden_state_forwards_ask_for_no_logits_and_lose_nothing(tmp_path, monkeypatch, kd_alpha):
    """The student's and the teacher's forwards run with an empty ``logits_to_keep``, and give the loss and gradients
    they gave with ``logits_to_keep=1``."""
    from paser_hf.recovery import trainer as trainer_module

    teacher, trainer, model, batch = bf16_lora_trainer(tmp_path, kd_alpha)
    seen = {"student": [], "teacher": []}
    hooks = [module.register_forward_pre_hook(
        lambda module, args, kwargs, who=who: seen[who].append(kwargs["logits_to_keep"]), with_kwargs=True)
        for who, module in (("student", model.get_base_model()), ("teacher", teacher))]
    no_logits = lora_loss_and_grads(trainer, model, batch, trainer.compute_loss_context_manager)
    for hook in hooks:
        hook.remove()
    assert [x.numel() for x in seen["student"]] == [0]
    assert [x.numel() for x in seen["teacher"]] == ([0] if kd_alpha else [])
    monkeypatch.setattr(trainer_module, "_fewest_logits", lambda model: 1)
    last_logits = lora_loss_and_grads(trainer, model, batch, trainer.compute_loss_context_manager)
    assert torch.equal(no_logits[0], last_logits[0]) and torch.equal(no_logits[1], last_logits[1])


def test_a_forward_that_takes_only_an_int_is_asked_for_the_last_logits():
    from paser_hf.recovery.trainer import _fewest_logits

    class IntOnly(torch.nn.Module):
        def forward(self, input_ids, logits_to_keep: int = 0):
            return input_ids

        def get_input_embeddings(self):
            return torch.nn.Embedding(3, 2)

    assert _fewest_logits(IntOnly()) == 1
    assert _fewest_logits(tied_llama()).numel() == 0


@pytest.mark.parametrize("settings, adapter", [({"cache_frozen_casts": False}, {}), ({}, {"use_dora": True})])
def test_frozen_weights_keep_autocasts_casts_when_off_or_read_by_the_adapter(tmp_path, settings, adapter):
    """Switched off, or under DoRA, whose weight norm reads the base weight itself: no cast copies."""
    trainer = RecoveryTrainer(model=tied_llama(), args=recovery_config(tmp_path, bf16=True, **settings),
                              train_dataset=Dataset.from_list(ALPACA), processing_class=tiny_tokenizer(),
                              peft_config=lora(**adapter))
    model = trainer.accelerator.prepare_model(trainer.model)
    assert trainer._frozen_parameters(model) == {}


def test_torch_compile_compiles_the_decoder_blocks_in_place(tmp_path):
    torch.manual_seed(0)
    results = {}
    for compiled in (False, True):
        student = pruned(peaked(tied_llama(seed=1), seed=1))
        # the "eager" backend: dynamo's graphs without inductor's code generation (a backend implies torch_compile)
        compile_settings = {"torch_compile_backend": "eager"} if compiled else {}
        config = recovery_config(tmp_path / str(compiled), **compile_settings)
        trainer = RecoveryTrainer(model=student, args=config, train_dataset=Dataset.from_list(ALPACA),
                                  processing_class=tiny_tokenizer(), peft_config=lora(init_lora_weights=False))
        model = trainer.accelerator.prepare_model(trainer.model)
        layers = trainer.model.get_base_model().model.layers
        assert all((layer._compiled_call_impl is not None) == compiled for layer in layers)
        assert trainer.accelerator.state.dynamo_plugin.backend.value == "NO"
        batch = first_batch(trainer)
        results[compiled] = lora_loss_and_grads(trainer, model, batch, trainer.compute_loss_context_manager)
    torch.testing.assert_close(results[True][0], results[False][0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(results[True][1], results[False][1], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kd_alpha", [0.0, 0.5])
def test_torch_compile_on_cpu_runs_the_chunk_losses_as_compiled_kernels(tmp_path, monkeypatch, kd_alpha):
    """With ``torch_compile`` on CPU the fused chunk losses come from `compiled_losses`, with the loss and gradients
    of the eager kernels; without it, from the eager kernels. In float32: under bfloat16 autocast the LoRA gradients
    are bfloat16 matmuls, whose roundings a last-bit change in a logit's gradient flips."""
    from paser_hf.recovery import losses

    calls = []
    for name in ("compiled_forward_kl_and_ce", "compiled_cross_entropy_and_hits"):
        original = getattr(losses, name)
        monkeypatch.setattr(losses, name, lambda *args, _f=original, _n=name, **kwargs: calls.append(_n) or _f(
            *args, **kwargs))
    teacher = peaked(tied_llama(seed=1), seed=1)
    trainer = RecoveryTrainer(model=pruned(copy.deepcopy(teacher)), teacher_model=teacher if kd_alpha else None,
                              args=recovery_config(tmp_path, kd_alpha=kd_alpha, torch_compile_backend="eager"),
                              train_dataset=Dataset.from_list(ALPACA), processing_class=tiny_tokenizer(),
                              peft_config=lora(init_lora_weights=False))
    model = trainer.accelerator.prepare_model(trainer.model)
    batch = first_batch(trainer)
    assert trainer._loss_compile_options(torch.device("cpu")) == {"backend": "eager", "mode": None}
    assert trainer._loss_compile_options(torch.device("cuda")) is None  # eager kernels where not measured
    compiled = lora_loss_and_grads(trainer, model, batch, trainer.compute_loss_context_manager)
    assert calls == ["compiled_forward_kl_and_ce" if kd_alpha else "compiled_cross_entropy_and_hits"]
    monkeypatch.setattr(trainer.args, "torch_compile", False)
    assert trainer._loss_compile_options(torch.device("cpu")) is None
    eager = lora_loss_and_grads(trainer, model, batch, trainer.compute_loss_context_manager)
    assert len(calls) == 1
    torch.testing.assert_close(compiled[0], eager[0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(compiled[1], eager[1], rtol=1e-5, atol=1e-7)

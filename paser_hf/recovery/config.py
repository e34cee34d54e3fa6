"""`RecoveryConfig`: `trl.SFTConfig` plus the distillation settings of `RecoveryTrainer`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from trl import SFTConfig

from ..models import cpu_only, native_bf16
from .losses import KD_LOSSES

KD_SCHEDULES = ("constant", "kd_then_sft", "sft_then_kd")


@dataclass
class RecoveryConfig(SFTConfig):
    """Configuration of `RecoveryTrainer`: `trl.SFTConfig` plus the distillation settings.

    ``loss = (1 - kd_alpha) * CE + kd_alpha * kd_temperature^2 * D(teacher, student)`` on the completion tokens,
    ``D`` chosen by ``kd_loss`` (see `paser_hf.recovery.losses`). The paper's LoRA settings (Sec. 4: r=8, effective
    batch 64, 2 epochs, lr 1e-4) are set in the recipes, not as defaults here.

    Defaults that differ from trl's on a machine without an accelerator (trl's hold elsewhere): ``use_cpu=True``;
    ``bf16`` (autocast) on where the CPU multiplies bfloat16 natively (`paser_hf.models.native_bf16`) and off
    elsewhere, where trl's default ``bf16=True`` fails; ``gradient_checkpointing`` off, since recomputing the forward
    costs a third of a CPU step and CPU memory is rarely what limits recovery; ``chunked_ce`` on and
    ``checkpoint_head_chunks`` off. Setting any of them explicitly wins.

    ``torch_compile=True`` compiles the decoder blocks of the student and the teacher in place (regional
    compilation) rather than the whole model, and on CPU runs the chunk losses as compiled kernels. Off by default,
    as in trl: on 2 CPU cores the first step took 8-12 s to compile from inductor's cache (40 s cold), and each
    later LoRA step took 0.72-0.75x the eager one, a KD step 0.69-0.73x (SmolLM2-135M, batch 4 x 256, an AMX
    Xeon).
    """

    _VALID_DICT_FIELDS = SFTConfig._VALID_DICT_FIELDS + ["teacher_model_init_kwargs"]

    gradient_checkpointing: bool | None = field(
        default=None,
        metadata={
            "help": "Recompute activations in the backward pass to save memory (~1/3 more compute). None: on with an "
            "accelerator (trl's default), off on CPU."
        },
    )

    kd_alpha: float = field(
        default=0.0,
        metadata={
            "help": "Weight of the distillation term, in [0, 1]: loss = (1 - kd_alpha) * CE + kd_alpha * KD. "
            "0 is plain SFT (no teacher needed); 1 is pure logit distillation (the paper's App. F)."
        },
    )
    kd_temperature: float = field(
        default=1.0,
        metadata={"help": "Softmax temperature T (> 0) of both distributions; the divergence is multiplied by T^2."},
    )
    kd_loss: str = field(
        default="forward_kl",
        metadata={
            "help": "Divergence: 'forward_kl' KL(teacher || student), 'reverse_kl' KL(student || teacher), or 'jsd' "
            "(generalised Jensen-Shannon with weight kd_jsd_beta on the teacher).",
            "choices": list(KD_LOSSES),
        },
    )
    kd_jsd_beta: float = field(
        default=0.5,
        metadata={
            "help": "Mixture weight beta in (0, 1) of the generalised JSD: m = beta * teacher + (1 - beta) * student."
        },
    )
    kd_chunk_size: int = field(
        default=256,
        metadata={
            "help": "Completion tokens whose vocabulary-sized logits are alive at once in the distillation loss. "
            "Larger is faster, smaller uses less memory."
        },
    )
    chunked_ce: bool | None = field(
        default=None,
        metadata={
            "help": "Compute the SFT cross-entropy from the completion tokens' final hidden states through the LM "
            "head in chunks, as distillation does (no entropy metric), instead of trl's fused head over every "
            "position. None: on on CPU, where trl's head took half of a LoRA step, off with an accelerator."
        },
    )
    checkpoint_head_chunks: bool | None = field(
        default=None,
        metadata={
            "help": "Recompute each chunk's vocabulary-sized logits in the backward pass of the chunked losses "
            "(distillation, chunked_ce) instead of keeping them: memory for one chunk x V instead of every completion "
            "token x V, at the cost of running the LM heads twice. None: on with an accelerator, off on CPU."
        },
    )
    cache_frozen_casts: bool = field(
        default=True,
        metadata={
            "help": "Under bf16 autocast on CPU, cast the frozen Linear weights (the teacher's; a LoRA student's base "
            "weights and LM head, not under DoRA or other adapters that read the base weight) to bf16 once and keep "
            "the casts, instead of letting autocast cast them at every forward: the same products, half the frozen "
            "weights' float32 memory more. Ignored on accelerators."
        },
    )
    kd_schedule: str = field(
        default="constant",
        metadata={
            "help": "'constant' uses kd_alpha throughout. The paper's cascades: 'kd_then_sft' uses kd_alpha for the "
            "first kd_stage_ratio of the training steps and plain SFT (alpha 0) after; 'sft_then_kd' the reverse.",
            "choices": list(KD_SCHEDULES),
        },
    )
    kd_stage_ratio: float = field(
        default=0.5,
        metadata={
            "help": "Fraction in (0, 1) of the optimizer steps given to the first stage of a staged kd_schedule."
        },
    )
    teacher_model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Path or name of the unpruned teacher, loaded by the trainer when no teacher_model is passed. "
            "It must use the student's tokenizer."
        },
    )
    teacher_model_init_kwargs: dict[str, Any] | str | None = field(
        default=None,
        metadata={
            "help": "Keyword arguments for `from_pretrained` when the teacher is given by name (e.g. "
            "'{\"dtype\": \"bfloat16\"}'); dtype defaults to float32."
        },
    )

    def __post_init__(self):
        if not 0.0 <= self.kd_alpha <= 1.0:
            raise ValueError(f"kd_alpha must be in [0, 1], got {self.kd_alpha}.")
        if not self.kd_temperature > 0.0:
            raise ValueError(f"kd_temperature must be > 0, got {self.kd_temperature}.")
        if self.kd_loss not in KD_LOSSES:
            raise ValueError(f"kd_loss must be one of {KD_LOSSES}, got {self.kd_loss!r}.")
        if not 0.0 < self.kd_jsd_beta < 1.0:
            raise ValueError(
                f"kd_jsd_beta must be in (0, 1), got {self.kd_jsd_beta}; for the limits use kd_loss='forward_kl' or "
                "'reverse_kl'."
            )
        if self.kd_chunk_size < 1:
            raise ValueError(f"kd_chunk_size must be >= 1, got {self.kd_chunk_size}.")
        if self.kd_schedule not in KD_SCHEDULES:
            raise ValueError(f"kd_schedule must be one of {KD_SCHEDULES}, got {self.kd_schedule!r}.")
        if self.kd_schedule != "constant" and self.kd_alpha == 0.0:
            raise ValueError(f"kd_schedule={self.kd_schedule!r} alternates KD and SFT stages; it needs kd_alpha > 0.")
        if not 0.0 < self.kd_stage_ratio < 1.0:
            raise ValueError(f"kd_stage_ratio must be in (0, 1), got {self.kd_stage_ratio}.")
        on_cpu = self.use_cpu or cpu_only()
        if on_cpu:
            self.use_cpu = True
            if self.bf16 is None:
                self.bf16 = not self.fp16 and native_bf16("cpu")
        if self.gradient_checkpointing is None:
            self.gradient_checkpointing = not on_cpu
        if self.chunked_ce is None:
            self.chunked_ce = on_cpu
        if self.checkpoint_head_chunks is None:
            self.checkpoint_head_chunks = not on_cpu
        super().__post_init__()

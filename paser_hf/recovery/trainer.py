"""`RecoveryTrainer`: LoRA SFT and logit distillation from the unpruned teacher (paper Sec. 4, App. F).

``loss = (1 - kd_alpha) * CE + kd_alpha * KD``, both means over the completion tokens (the tokens whose label is not
-100, the mask `trl.SFTTrainer` builds). ``kd_alpha = 0`` is `trl.SFTTrainer`'s loss (computed by trl, or with
``chunked_ce`` from the completion tokens' hidden states); ``kd_alpha = 1`` is the paper's pure KD (App. F).
`RecoveryTrainer` changes only `compute_loss` and adds a teacher.
"""

from __future__ import annotations

import copy
import inspect
import logging
from contextlib import nullcontext
from typing import ClassVar

import torch
from accelerate.utils import TorchDynamoPlugin, is_peft_model
from datasets import Dataset
from peft import PeftType
from peft.helpers import disable_input_dtype_casting
from torch.distributed.tensor import DTensor
from torch.func import functional_call
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from trl import SFTTrainer
from trl.data_utils import get_dataset_column_names
from trl.models import prepare_deepspeed, prepare_fsdp
from trl.trainer.utils import (
    create_model_from_path,
    disable_dropout_in_model,
    get_config_model_id,
    maybe_gather_lm_head_ctx,
)

from ..formatting import to_trl_dataset
from ..paper import PASER_PAPER
from .compilation import compile_repeated_blocks
from .config import RecoveryConfig
from .frozen_casts import FrozenCasts
from .losses import LogitHead, chunked_ce_losses, chunked_head_losses, completion_positions
from .offline import (
    STORED_COLUMNS,
    StoredTargetsCollator,
    check_alignment,
    check_stored_batch,
    has_stored_targets,
    pop_stored_targets,
    stored_head_losses,
)

logger = logging.getLogger(__name__)


def _is_alpaca(dataset) -> bool:
    if not isinstance(dataset, Dataset):
        return False
    columns = set(get_dataset_column_names(dataset))
    return {"instruction", "output"} <= columns and not columns & {"prompt", "messages", "text", "input_ids"}


def _alpaca_as_prompt_completion(dataset, tokenizer):
    """Alpaca rows (a `PaserDatasetSelector` subset) mapped to prompt-completion; other datasets unchanged."""
    return to_trl_dataset(dataset, tokenizer, dataset_format="alpaca") if _is_alpaca(dataset) else dataset


def _local_tokenizer(name_or_path: str | None):
    """The tokenizer saved with a model, read from local files only; None when there is none."""
    if not name_or_path:
        return None
    try:
        return AutoTokenizer.from_pretrained(name_or_path, local_files_only=True)
    except (OSError, ValueError, KeyError):
        return None


def _full_head_tensors(weight: torch.Tensor, bias: torch.Tensor | None):
    """An LM head's whole weight and bias, usable outside the model's forward and across a checkpointed backward.

    FSDP2 keeps parameters as sharded DTensors: they are all-gathered (differentiably, so a trainable head still gets
    its gradient). ZeRO-3 partitions are gathered and copied (the head must be frozen). Both are collectives, so this
    runs once per step on every rank, never per chunk.
    """
    if isinstance(weight, DTensor):
        return weight.full_tensor(), (bias.full_tensor() if isinstance(bias, DTensor) else bias)
    gather = maybe_gather_lm_head_ctx(weight, bias)
    if isinstance(gather, nullcontext):
        return weight, bias
    with gather:
        return weight.detach().clone(), (None if bias is None else bias.detach().clone())


def _fewest_logits(model) -> int | torch.Tensor:
    """``logits_to_keep`` for a forward whose logits are not used: no position (an empty tensor of positions) where
    the model's forward takes a tensor, as transformers' `slice_logits_to_keep` does, else the last one. With the last
    one, a batch of one row ran the LM head on a (1, 1, H) slice of the hidden states in 70 ms on an AMX CPU (2 ms for
    a fresh row): a tenth of a LoRA step, in the student's forward and again in the teacher's."""
    base = model.get_base_model() if is_peft_model(model) else model
    parameter = inspect.signature(base.forward).parameters.get("logits_to_keep")
    if parameter is not None and "Tensor" in str(parameter.annotation):
        return torch.empty(0, dtype=torch.long, device=_input_device(base))
    return 1


def _input_device(model) -> torch.device:
    return model.get_input_embeddings().weight.device


class RecoveryTrainer(SFTTrainer):
    """`trl.SFTTrainer` with an optional frozen teacher and a chunked distillation term.

    What changes, and why:
    - ``__init__`` maps Alpaca columns to prompt-completion (so a `PaserDatasetSelector` subset trains on the tokens
      PASER scored), then loads, checks and prepares the teacher after `SFTTrainer.__init__` has built the
      accelerator. It hands `SFTTrainer` a copy of a given tokenizer: `SFTTrainer` sets ``pad_token`` on the
      tokenizer it gets, which changed the caller's tokenizer and with it the key of every cached PASER stage of a
      later selection in the same process (the JSD was scored again, 12 minutes on 2,000 rows on 2 CPU cores).
    - ``compute_loss``: with ``kd_alpha == 0`` (or in the SFT stage of a staged schedule) and ``chunked_ce`` off it is
      `SFTTrainer`'s. Else the student runs without labels and asked for no logits, its decoder's output kept:
      the ordinary forward through every wrapper (DDP, FSDP, DeepSpeed, PEFT), which skips trl's fused LM head (it
      returns no logits) and the model's own full-sequence logits. The final hidden states of the completion
      positions of both models then go through their LM heads chunk by chunk
      (`paser_hf.recovery.losses.chunked_head_losses`), which gives the KD term and the CE term from the same student
      logits; SFT with ``chunked_ce`` takes the CE term alone (`chunked_ce_losses`). On CPU that halved the time the
      LM head took: trl's fused head runs over every position and computes the per-token entropy metric, forward and
      backward.
    - ``compute_loss_context_manager`` switches PEFT's input casting off where the forward runs under autocast.
    - Under bfloat16 autocast on CPU, the frozen Linear weights (the teacher's; the student's base weights and LM
      head under LoRA) are cast once and kept (`paser_hf.recovery.frozen_casts`), not cast again at every forward;
      the products are the same.
    - ``torch_compile`` compiles the decoder blocks of the student and the teacher in place (regional compilation,
      `paser_hf.recovery.compilation`), not the whole model through accelerate; on CPU the chunk losses then run as
      compiled kernels too (`paser_hf.recovery.compiled_losses`).

    The teacher is frozen (``requires_grad=False``), in eval mode with dropout off, and prepared like trl prepares
    reference models: `prepare_deepspeed` under DeepSpeed (sharded under ZeRO-3), `prepare_fsdp` under FSDP, else
    `Accelerator.prepare_model(evaluation_mode=True)`. A teacher already on an accelerator or dispatched with a
    ``device_map`` stays where it is: its LM head runs where its weight is and each chunk of its logits is moved to
    the student's device.

    Offline distillation: with ``kd_alpha > 0``, no teacher and a training set that carries the teacher's stored
    top-k distributions (``PaserConfig.teacher_topk`` or `capture_teacher_topk`), the KD term is taken against them
    (`paser_hf.recovery.offline`); every row is checked against the trainer's tokenisation before training starts.
    """

    _tag_names: ClassVar[list[str]] = ["trl", "sft", "paser", "pruning-recovery"]
    _name = "PASER recovery"
    _paper = PASER_PAPER

    def __init__(
        self,
        model: str | PreTrainedModel,
        teacher_model: str | PreTrainedModel | None = None,
        args: RecoveryConfig | None = None,
        data_collator=None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        peft_config=None,
        **kwargs,
    ):
        if args is None:
            name = model if isinstance(model, str) else get_config_model_id(model.config)
            args = RecoveryConfig(f"{str(name).rstrip('/').split('/')[-1]}-recovered")
        elif not isinstance(args, RecoveryConfig):
            raise TypeError(f"args must be a RecoveryConfig, got {type(args).__name__}.")
        if teacher_model is None:
            teacher_model = args.teacher_model_name_or_path
        self.offline_kd = args.kd_alpha > 0.0 and teacher_model is None and has_stored_targets(train_dataset)
        if args.kd_alpha > 0.0 and teacher_model is None and not self.offline_kd:
            raise ValueError(
                f"kd_alpha={args.kd_alpha} needs a teacher: pass teacher_model= (the unpruned model), set "
                "RecoveryConfig.teacher_model_name_or_path or train on rows with stored teacher distributions "
                "(paser teacher-logits); kd_alpha=0 trains with plain SFT and no teacher."
            )
        if args.kd_alpha == 0.0 and teacher_model is not None:
            logger.warning("kd_alpha=0: the teacher is not used and is not loaded.")
            teacher_model = None
        if teacher_model is not None and not isinstance(teacher_model, str) and args.teacher_model_init_kwargs:
            raise ValueError("teacher_model_init_kwargs only applies to a teacher given by name; this one is loaded.")

        if processing_class is None and _is_alpaca(train_dataset):
            processing_class = AutoTokenizer.from_pretrained(
                model if isinstance(model, str) else get_config_model_id(model.config)
            )
        elif isinstance(processing_class, PreTrainedTokenizerBase):
            processing_class = copy.deepcopy(processing_class)
        train_dataset = _alpaca_as_prompt_completion(train_dataset, processing_class)
        if isinstance(eval_dataset, dict):
            eval_dataset = {k: _alpaca_as_prompt_completion(v, processing_class) for k, v in eval_dataset.items()}
        elif eval_dataset is not None:
            eval_dataset = _alpaca_as_prompt_completion(eval_dataset, processing_class)

        super().__init__(
            model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            peft_config=peft_config,
            **kwargs,
        )

        self.teacher_model = None
        self.kd_vocab_size = None
        self._frozen_casts = FrozenCasts(keep=self.args.cache_frozen_casts)
        if teacher_model is not None:
            teacher_name = teacher_model if isinstance(teacher_model, str) else None
            if teacher_name is not None:
                teacher_model = self._load_teacher(teacher_name)
            self.kd_vocab_size = self._check_vocabularies(teacher_model, teacher_name)
            self._check_student_for_kd()
            self.teacher_model = self._prepare_teacher(teacher_model)
        if self.offline_kd:
            self._check_student_for_kd()
            self._check_stored_datasets()
            self.data_collator = StoredTargetsCollator(self.data_collator)
        if self.args.torch_compile:
            # shapes dynamic from the first batch on: padded lengths vary from batch to batch, and a static first
            # graph was compiled again at the second length
            for module in (self.model, self.teacher_model):
                if module is not None:
                    compile_repeated_blocks(module, backend=self.args.torch_compile_backend,
                                            mode=self.args.torch_compile_mode, dynamic=True)

    def _build_accelerator_args(self, **kwargs) -> dict:
        """`Trainer`'s accelerator settings without accelerate's `torch.compile` of the whole model: with
        ``torch_compile`` the decoder blocks are compiled in place instead (`compile_repeated_blocks`). The whole
        SmolLM2-135M took 116 s to compile on 2 CPU cores and as long again at each new padded length; accelerate's
        regional mode compiles copies of the blocks, which trl's patched forward never calls."""
        args = super()._build_accelerator_args(**kwargs)
        if self.args.torch_compile:
            args["dynamo_plugin"] = TorchDynamoPlugin(backend="no")
        return args

    def _check_stored_datasets(self) -> None:
        """Every training (and evaluation) row must train on the tokens its stored distributions cover."""
        check_alignment(self.train_dataset, "train_dataset", self.args.max_length)
        evals = self.eval_dataset if isinstance(self.eval_dataset, dict) else {"eval_dataset": self.eval_dataset}
        for name, dataset in evals.items():
            if dataset is not None:
                check_alignment(dataset, name, self.args.max_length)

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        if self.offline_kd and STORED_COLUMNS[0] not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, *STORED_COLUMNS]

    def _load_teacher(self, name_or_path: str) -> PreTrainedModel:
        init_kwargs = dict(self.args.teacher_model_init_kwargs or {})
        if self.args.distributed_state.distributed_type in ("MULTI_GPU", "DEEPSPEED"):
            init_kwargs["device_map"] = None  # as trl does: "auto" fails under DDP / DeepSpeed
        init_kwargs.setdefault("trust_remote_code", self.args.trust_remote_code)
        return create_model_from_path(name_or_path, **init_kwargs)

    def _check_vocabularies(self, teacher: PreTrainedModel, teacher_name: str | None) -> int:
        """Both models must score the tokenizer's ids; returns the number of ids the divergence compares.

        Embedding matrices padded to different sizes are fine (the common ids are compared); a teacher whose saved
        tokenizer differs from the student's, or a model with fewer ids than the tokenizer, is an error.
        """
        num_tokens = len(self._tokenizer)
        student_rows = self.model.config.get_text_config().vocab_size
        teacher_rows = teacher.config.get_text_config().vocab_size
        for who, rows in (("student", student_rows), ("teacher", teacher_rows)):
            if rows < num_tokens:
                raise ValueError(
                    f"The {who} has {rows} vocabulary ids but the tokenizer has {num_tokens} tokens. Distillation "
                    "compares teacher and student token by token, so both must use the student's tokenizer."
                )
        teacher_tokenizer = _local_tokenizer(teacher_name or getattr(teacher.config, "_name_or_path", None))
        if teacher_tokenizer is not None and teacher_tokenizer.get_vocab() != self._tokenizer.get_vocab():
            raise ValueError(
                f"The teacher's tokenizer ({teacher_name or teacher.config._name_or_path}) differs from the student's "
                "processing_class. Distillation needs one shared tokenizer: use the unpruned model the student was "
                "pruned from."
            )
        if student_rows != teacher_rows:
            logger.info("Student and teacher have %d and %d vocabulary rows: comparing the first %d ids.",
                        student_rows, teacher_rows, min(student_rows, teacher_rows))
        return min(student_rows, teacher_rows)

    def _check_student_for_kd(self) -> None:
        if is_peft_model(self.model) and self.model.active_peft_config.is_prompt_learning:
            raise ValueError(
                "Prompt-learning adapters (prompt/prefix tuning) add virtual tokens, which shifts the hidden states "
                "the distillation loss reads; use a weight adapter such as LoRA."
            )
        head = self.model.get_output_embeddings()
        zero3 = self.args.deepspeed_plugin is not None and self.args.deepspeed_plugin.zero_stage == 3
        if zero3 and any(p.requires_grad for p in head.parameters()):
            raise ValueError(
                "Under DeepSpeed ZeRO-3 the distillation loss needs a frozen LM head (the chunked loss reads a copy of "
                "its gathered weight). Train with LoRA (lm_head not in target_modules) or use ZeRO-2 / FSDP."
            )

    def _prepare_teacher(self, teacher: PreTrainedModel):
        teacher.eval()
        teacher.requires_grad_(False)
        disable_dropout_in_model(teacher)
        if self.is_deepspeed_enabled:
            return prepare_deepspeed(teacher, self.accelerator)
        if self.is_fsdp_enabled:
            return prepare_fsdp(teacher, self.accelerator)
        placed = getattr(teacher, "hf_device_map", None) or _input_device(teacher).type not in ("cpu", "meta")
        return self.accelerator.prepare_model(teacher, device_placement=not placed, evaluation_mode=True)

    def compute_loss_context_manager(self):
        """`Trainer`'s context, plus PEFT's input casting switched off where accelerate runs the forward under
        autocast. PEFT casts a LoRA layer's input to the adapter's float32 and autocast casts it straight back to
        bfloat16 for the product: the same values, two copies of each bfloat16 activation a LoRA layer reads
        (forward and backward). Without them a CPU LoRA step took 3-5% less time (SmolLM2-135M, all-linear r=8,
        batch 4 x 256)."""
        stack = super().compute_loss_context_manager()
        if self.accelerator.native_amp and is_peft_model(self.model):
            stack.enter_context(disable_input_dtype_casting(self.model))
        return stack

    def current_kd_alpha(self) -> float:
        """``kd_alpha``, or 0 during the SFT stage of a staged ``kd_schedule`` (the first stage covers
        ``kd_stage_ratio * max_steps`` optimizer steps)."""
        if self.teacher_model is None and not self.offline_kd:
            return 0.0
        if self.args.kd_schedule == "constant":
            return self.args.kd_alpha
        in_first_stage = self.state.global_step < self.args.kd_stage_ratio * max(self.state.max_steps, 1)
        kd_stage = in_first_stage == (self.args.kd_schedule == "kd_then_sft")
        return self.args.kd_alpha if kd_stage else 0.0

    def _logit_head(self, model) -> LogitHead:
        module = self.accelerator.unwrap_model(model)
        head = module.get_output_embeddings()
        weight, bias = (self._frozen_casts(t) for t in _full_head_tensors(head.weight, head.bias))
        config = module.config.get_text_config()
        return LogitHead(
            weight, bias, softcap=getattr(config, "final_logit_softcapping", None),
            scale=getattr(config, "logit_scale", None) or 1.0,
        )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        kd_alpha = self.current_kd_alpha()
        stored = pop_stored_targets(inputs)
        if kd_alpha == 0.0 and not self.uses_chunked_ce():
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
        mode = "train" if self.model.training else "eval"
        labels = inputs["labels"]
        model_inputs = {k: v for k, v in inputs.items() if k != "labels"}
        hidden_inputs = {**model_inputs, "use_cache": False}

        student_hidden = self._final_hidden_states(model, hidden_inputs, self._frozen_parameters(model))
        mask, targets = completion_positions(labels)
        # the heads run outside the models' forward, so under bf16 mixed precision they need the autocast
        # accelerate puts around each forward; the divergence maths stays float32 (`losses.divergence`)
        with self.accelerator.autocast():
            if kd_alpha == 0.0:
                losses = chunked_ce_losses(student_hidden[:, :-1][mask], targets, self._logit_head(model),
                                           self.args.kd_chunk_size, self.args.checkpoint_head_chunks,
                                           self._loss_compile_options(student_hidden.device))
            elif stored is not None:
                losses = self._stored_losses(model, student_hidden[:, :-1][mask], targets, stored, mask)
            else:
                losses = self._teacher_losses(model, student_hidden, hidden_inputs, targets, mask)
        # Normalised like SFTTrainer's loss: by the completion tokens of the whole accumulated batch when known.
        num_tokens = mask.sum() if num_items_in_batch is None else num_items_in_batch
        num_tokens = torch.as_tensor(num_tokens, device=losses.ce_sum.device).clamp(min=1)
        loss = ((1.0 - kd_alpha) * losses.ce_sum + kd_alpha * losses.kd_sum) / num_tokens
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * (self.accelerator.num_processes // self.get_tp_size())
        self._record_kd_metrics(mode, inputs, mask, losses)

        if return_outputs:
            with torch.no_grad():
                return loss, model(**model_inputs)
        return loss

    def _final_hidden_states(self, model, inputs: dict, parameters: dict | None = None) -> torch.Tensor:
        """The final hidden states (B, L, H) of `model`'s ordinary forward on `inputs`, read from the output of its
        decoder (`get_decoder`) by a forward hook; with `parameters`, the forward runs with them in place of the
        model's own (`torch.func.functional_call`, ties kept as they are). ``output_hidden_states=True`` gives the
        same tensor through a hook on every layer, which broke each compiled decoder block into two graphs
        (``torch_compile``); it stays the way for a model without a decoder to hook. The forward is asked for as
        few logits as it allows (`_fewest_logits`)."""
        unwrapped = self.accelerator.unwrap_model(model)
        inputs = {**inputs, "logits_to_keep": _fewest_logits(unwrapped)}

        def forward(**kwargs):
            if parameters:
                return functional_call(model, parameters, kwargs=kwargs, tie_weights=False)
            return model(**kwargs)

        try:
            decoder = unwrapped.get_decoder()
        except (AttributeError, ValueError):
            return forward(**inputs, output_hidden_states=True).hidden_states[-1]
        captured = []
        handle = decoder.register_forward_hook(lambda module, args, output: captured.append(output[0]))
        try:
            forward(**inputs)
        finally:
            handle.remove()
        return captured[-1]

    def _frozen_parameters(self, model) -> dict:
        """`model`'s frozen Linear weights cast once for bfloat16 autocast on CPU (`FrozenCasts.linear_weights`), to
        run its forward with: every weight of the teacher, the base weights of a LoRA student. None for a wrapped or
        sharded model, whose wrappers manage its parameters, and for adapters other than plain LoRA: DoRA, OFT and
        others compute with the base weight itself (its norm, a rotation of it), which must keep its float32
        values."""
        if self.is_deepspeed_enabled or self.is_fsdp_enabled or self.accelerator.unwrap_model(model) is not model:
            return {}
        if is_peft_model(model) and not all(
            config.peft_type == PeftType.LORA and not getattr(config, "use_dora", False)
            for config in model.peft_config.values()
        ):
            return {}
        with self.accelerator.autocast():
            return self._frozen_casts.linear_weights(model)

    def uses_chunked_ce(self) -> bool:
        """`RecoveryConfig.chunked_ce`, where the loss is plain token-level NLL (trl keeps its own path for DFT,
        label smoothing, a custom `compute_loss_func` and MoE auxiliary losses)."""
        return bool(self.args.chunked_ce) and self.args.loss_type == "nll" and self.label_smoother is None and (
            self.compute_loss_func is None and not self.aux_loss_enabled)

    def _stored_losses(self, model, student_hidden, targets, stored, mask):
        """KD and CE sums against the stored teacher distributions (`paser_hf.recovery.offline`)."""
        head = self._logit_head(model)
        check_stored_batch(stored, mask, head.weight.size(0))
        return stored_head_losses(student_hidden, targets, head, stored, kind=self.args.kd_loss,
                                  temperature=self.args.kd_temperature, beta=self.args.kd_jsd_beta,
                                  chunk_size=self.args.kd_chunk_size, recompute=self.args.checkpoint_head_chunks)

    def _teacher_losses(self, model, student_hidden, hidden_inputs, targets, mask):
        """KD and CE sums against the teacher model run on the batch."""
        teacher_device = _input_device(self.accelerator.unwrap_model(self.teacher_model))
        with torch.no_grad():
            teacher_inputs = {k: v.to(teacher_device) if torch.is_tensor(v) else v for k, v in hidden_inputs.items()}
            teacher_hidden = self._final_hidden_states(self.teacher_model, teacher_inputs,
                                                       self._frozen_parameters(self.teacher_model))
        return chunked_head_losses(
            student_hidden[:, :-1][mask],
            teacher_hidden[:, :-1][mask.to(teacher_hidden.device)],
            targets,
            self._logit_head(model),
            self._logit_head(self.teacher_model),
            kind=self.args.kd_loss,
            temperature=self.args.kd_temperature,
            beta=self.args.kd_jsd_beta,
            kd_vocab_size=self.kd_vocab_size,
            chunk_size=self.args.kd_chunk_size,
            recompute=self.args.checkpoint_head_chunks,
            compile_options=self._loss_compile_options(student_hidden.device),
        )

    def _loss_compile_options(self, device: torch.device) -> dict | None:
        """With ``torch_compile`` on CPU, `torch.compile`'s settings for the chunk losses' compiled kernels
        (`compiled_losses`). Profiled on 2 CPU cores (SmolLM2-135M, batch 4 x 256) they took 0.14 s less than the
        eager kernels per KD step of 1.85 s, 0.05 s less per SFT step of 1.34 s. Elsewhere None, the eager kernels,
        the only ones measured on an accelerator."""
        if not self.args.torch_compile or device.type != "cpu":
            return None
        return {"backend": self.args.torch_compile_backend, "mode": self.args.torch_compile_mode}

    def _record_kd_metrics(self, mode, inputs, mask, losses) -> None:
        gather = self.accelerator.gather_for_metrics
        count = gather(mask.sum()).sum().clamp(min=1)
        metrics = self._metrics[mode]
        if self.current_kd_alpha() > 0.0:
            metrics["kd_loss"].append((gather(losses.kd_sum.detach()).sum() / count).item())
        metrics["ce_loss"].append((gather(losses.ce_sum.detach()).sum() / count).item())
        metrics["mean_token_accuracy"].append((gather(losses.num_correct).sum() / count).item())
        if mode == "train":
            if "attention_mask" in inputs:
                local = inputs["attention_mask"].sum()
            else:
                local = torch.tensor(inputs["position_ids"].size(1), device=inputs["position_ids"].device)
            self._total_train_tokens += gather(local).sum().item() // self._tp_size
        metrics["num_tokens"] = [self._total_train_tokens]

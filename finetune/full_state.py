"""Whole (gathered) trainable weights and AdamW state under one process, DDP, FSDP or DeepSpeed ZeRO, and back.

One format for all: weights keyed by parameter name, optimizer slots keyed `NAME:exp_avg`, `NAME:exp_avg_sq`,
`NAME:step`, as full fp32 tensors on the CPU; so a checkpoint written under one strategy resumes under another.
Gathering and restoring are collectives: every process calls them, in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from models.errors import InputError

SLOTS = ("exp_avg", "exp_avg_sq")


@dataclass
class FullState:
    """What a checkpoint holds of the model and the optimizer (complete on the main process).

    On a CPU the tensors may be the live weights and moments themselves (nothing is copied): write them
    before the next optimizer step.
    """

    weights: dict[str, torch.Tensor]
    slots: dict[str, torch.Tensor]
    groups: list[dict[str, Any]]  # the optimizer's param groups: hyperparameters and parameter names


def trainable_names(model: torch.nn.Module) -> list[str]:
    return [name for name, p in model.named_parameters() if p.requires_grad]


def gather(model: torch.nn.Module, optimizer: Any, engine: Any = None) -> FullState:
    """The full state on rank 0 (empty elsewhere); `model` is the unwrapped module, `engine` DeepSpeed's or None."""
    if engine is not None:
        return _gather_deepspeed(model, engine)
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    # Full tensors, moved to the CPU on rank 0 only (the others get empty dicts): FSDP shards are
    # all-gathered here, DDP and single-process weights are copied as they are.
    options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
    weights, optim = get_state_dict(model, _torch_optimizer(optimizer), options=options)
    # The state dict also holds buffers (e.g. a 4-bit base's quantization state): keep what is trained.
    trained = set(trainable_names(model))
    weights = {k: v for k, v in weights.items() if k in trained}
    slots = {f"{name}:{key}": value for name, slot in optim.get("state", {}).items() for key, value in slot.items()}
    groups = [dict(g) for g in optim.get("param_groups", [])]
    return FullState({k: v.float().contiguous() for k, v in weights.items()}, _fp32(slots), groups)


def restore(model: torch.nn.Module, optimizer: Any, state: FullState, engine: Any = None) -> None:
    """Set the full state back on every process (each one passes the whole state it read)."""
    check_names(model, state)
    if engine is not None:
        _restore_deepspeed(model, engine, state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    slots: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.slots.items():
        name, _, field = key.rpartition(":")
        slots.setdefault(name, {})[field] = value
    dtypes = {name: p.dtype for name, p in model.named_parameters()}
    weights = {k: v.to(dtypes[k]) for k, v in state.weights.items()}
    # strict=False: the checkpoint holds the trainable weights only, the frozen base is loaded as usual.
    options = StateDictOptions(full_state_dict=True, strict=False)
    set_state_dict(
        model,
        _torch_optimizer(optimizer),
        model_state_dict=weights,
        optim_state_dict={"state": slots, "param_groups": state.groups},
        options=options,
    )


def check_names(model: torch.nn.Module, state: FullState) -> None:
    """The checkpoint trained exactly this model's trainable weights (same method, LoRA rank and targets)."""
    # ZeRO-3 leaves each parameter empty between uses; its whole shape is ds_shape.
    shapes = {n: tuple(getattr(p, "ds_shape", p.shape)) for n, p in model.named_parameters() if p.requires_grad}
    saved = {n: tuple(v.shape) for n, v in state.weights.items()}
    if shapes != saved:
        example = sorted(n for n in shapes.keys() | saved.keys() if shapes.get(n) != saved.get(n))[0]
        raise InputError(
            f"the checkpoint's trained weights differ from this model's ({example}: {saved.get(example)} in the "
            f"checkpoint, {shapes.get(example)} here): it was written with other finetune.method / finetune.lora "
            "settings; resume with those, or train under a new --name"
        )


def _torch_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    """The torch optimizer inside accelerate's wrapper (the state-dict helpers look at its parameters)."""
    return getattr(optimizer, "optimizer", optimizer)


def _fp32(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: (v.float() if v.is_floating_point() else v).contiguous().cpu() for k, v in tensors.items()}


# -- DeepSpeed ZeRO (stages 1-3): its partitioned fp32 master weights and optimizer state ----------------------
def _gather_deepspeed(model: torch.nn.Module, engine: Any) -> FullState:
    from deepspeed.utils import safe_get_full_fp32_param, safe_get_full_optimizer_state

    names = trainable_names(model)
    params = dict(model.named_parameters())
    weights, slots = {}, {}
    step = _deepspeed_step(engine)
    keep = not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0
    for name in names:  # each call all-gathers one parameter's partitions: same order on every process
        weight = safe_get_full_fp32_param(params[name])
        moments = {key: safe_get_full_optimizer_state(params[name], key) for key in SLOTS}
        if keep:  # every process receives the whole tensors; only the one that writes keeps them
            weights[name] = weight.detach()
            slots.update({f"{name}:{key}": value.detach() for key, value in moments.items()})
            slots[f"{name}:step"] = step.clone()
    groups = [{**_hyper(g), "params": names} for g in engine.optimizer.param_groups]
    return FullState(_fp32(weights), _fp32(slots), groups)


def _restore_deepspeed(model: torch.nn.Module, engine: Any, state: FullState) -> None:
    import deepspeed
    from deepspeed.utils import safe_set_full_fp32_param, safe_set_full_optimizer_state

    _create_deepspeed_slots(engine)
    params = dict(model.named_parameters())
    for name in trainable_names(model):
        param, value = params[name], state.weights[name]
        # The fp32 master copy the optimizer steps, then the module's own (possibly bf16) weight the forward
        # pass reads; under ZeRO-3 the latter is a partition, gathered and split again around the copy.
        safe_set_full_fp32_param(param, value.to(param.device))
        with deepspeed.zero.GatheredParameters([param], modifier_rank=0), torch.no_grad():
            param.data.copy_(value.view_as(param.data).to(param.dtype))
        for key in SLOTS:
            safe_set_full_optimizer_state(param, state.slots[f"{name}:{key}"].to(param.device), key)
    # AdamW's step count is one per partition group in DeepSpeed; every trainable parameter has taken the same.
    step = next(v for k, v in state.slots.items() if k.endswith(":step"))
    for slot in _deepspeed_inner(engine).state.values():
        if "step" in slot:
            slot["step"] = step.to(slot["step"].dtype) if torch.is_tensor(slot["step"]) else float(step)
    for group, saved in zip(engine.optimizer.param_groups, state.groups, strict=True):
        group.update(_hyper(saved))  # the learning rate the scheduler had reached, until its next step


def _create_deepspeed_slots(engine: Any) -> None:
    """Give AdamW its (zero) moments before the first step, so there is a place to restore them into.

    AdamW creates them lazily on its first step, and ZeRO-1/2 only then links each parameter to its slice of
    them: one step with zero gradients and a zero learning rate per flat partition creates both, moving no weight.
    """
    inner = _deepspeed_inner(engine)
    for group, flat in _deepspeed_partitions(engine):
        if SLOTS[0] in inner.state.get(flat, {}):
            continue
        params, rate, grad = group["params"], group["lr"], flat.grad
        group["params"], group["lr"], flat.grad = [flat], 0.0, torch.zeros_like(flat)
        inner.step()
        group["params"], group["lr"], flat.grad = params, rate, grad
    link = getattr(engine.optimizer, "_lazy_init_hp_params_optimizer_state", None)
    if link is not None:  # ZeRO-1/2: point each parameter at its slice of the state just created
        link()


def _deepspeed_partitions(engine: Any) -> list[tuple[dict[str, Any], torch.Tensor]]:
    """(AdamW param group, flat fp32 partition) pairs of this process."""
    zero, inner = engine.optimizer, _deepspeed_inner(engine)
    flats = getattr(zero, "fp32_partitioned_groups_flat", None)
    if flats is None:  # ZeRO-1/2: the partitions sit in AdamW's groups
        return [(group, flat) for group in inner.param_groups for flat in group["params"]]
    # ZeRO-3 puts each sub-group's partition into its AdamW group only for the duration of a step.
    return [(inner.param_groups[zero.sub_group_to_group_id[i]], flat) for i, flat in enumerate(flats)]


def _deepspeed_inner(engine: Any) -> torch.optim.Optimizer:
    """The torch AdamW the ZeRO optimizer steps on its flat partitions."""
    return engine.optimizer.optimizer


def _deepspeed_step(engine: Any) -> torch.Tensor:
    steps = [slot["step"] for slot in _deepspeed_inner(engine).state.values() if "step" in slot]
    return torch.as_tensor(steps[0] if steps else 0.0, dtype=torch.float32).reshape(())


def _hyper(group: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in group.items() if k != "params"}

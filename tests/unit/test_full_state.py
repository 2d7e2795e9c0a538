"""finetune/full_state.py in one process: weights and AdamW state round-trip; other weights are refused."""

from __future__ import annotations

import pytest
import torch

from finetune.full_state import FullState, gather, restore
from models.errors import InputError


def _trained(seed: int) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    model[0].weight.requires_grad_(False)  # a frozen base weight: not part of the state
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for _ in range(2):
        model(torch.randn(5, 4)).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
    return model, optimizer


def test_the_state_goes_back_whole_into_another_model() -> None:
    model, optimizer = _trained(0)
    full = gather(model, optimizer)
    assert sorted(full.weights) == ["0.bias", "1.bias", "1.weight"]
    assert sorted(k for k in full.slots if k.startswith("1.weight")) == [
        "1.weight:exp_avg",
        "1.weight:exp_avg_sq",
        "1.weight:step",
    ]
    # On a CPU the gathered tensors are the live ones: a copy, as the checkpoint on disk would be.
    full = FullState(
        {k: v.clone() for k, v in full.weights.items()}, {k: v.clone() for k, v in full.slots.items()}, full.groups
    )
    other, other_optimizer = _trained(1)
    with torch.no_grad():
        other[0].weight.copy_(model[0].weight)  # the frozen base, loaded as usual (not in a checkpoint)
    restore(other, other_optimizer, full)
    for name, param in other.named_parameters():
        if param.requires_grad:
            assert torch.equal(param, dict(model.named_parameters())[name])
    # Both take the same next step: the moments and the step count came back too.
    batch = torch.randn(5, 4)
    for m, o in ((model, optimizer), (other, other_optimizer)):
        m(batch).sum().backward()
        o.step()
    assert torch.equal(model[1].weight, other[1].weight)


def test_a_checkpoint_of_other_weights_is_refused_by_name() -> None:
    model, optimizer = _trained(0)
    full = gather(model, optimizer)
    wider = FullState({**full.weights, "1.weight": torch.zeros(2, 5)}, full.slots, full.groups)
    with pytest.raises(InputError, match=r"1.weight: \(2, 5\) in the checkpoint, \(2, 3\) here.*finetune.lora"):
        restore(model, optimizer, wider)
    fewer = FullState({k: v for k, v in full.weights.items() if k != "0.bias"}, full.slots, full.groups)
    with pytest.raises(InputError, match=r"0.bias: None in the checkpoint"):
        restore(model, optimizer, fewer)

"""Train the trainer's LoRA model sharded by PyTorch FSDP2 on CPUs (gloo), writing and resuming its checkpoints.

Run by tests under `torchrun --nproc_per_node 2`: accelerate turns FSDP on only over GPUs, so this builds what
configs/accelerate/fsdp.yaml asks accelerate for (fully_shard on each decoder layer, then on the whole model)
and drives the trainer's own pieces: model, optimizer and schedule, data order, and the checkpoint code
(finetune/full_state.py gathering the shards, finetune/checkpoint.py writing and reading them).

    fsdp_worker.py --data FILE --run-dir DIR --out FILE [--stop-at K] [--resume] --set KEY=VALUE ...
"""

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from torch.distributed.device_mesh import init_device_mesh  # noqa: E402
from torch.distributed.fsdp import fully_shard  # noqa: E402

from finetune.batches import collate, load_examples, micro_batches, split  # noqa: E402
from finetune.checkpoint import latest_checkpoint, read_checkpoint, restore_rng, save_checkpoint  # noqa: E402
from finetune.full_state import gather, restore  # noqa: E402
from finetune.methods import load_base, wrap_model  # noqa: E402
from finetune.train import build_optimizer, count_steps  # noqa: E402
from models.config import load_config  # noqa: E402
from models.loading import pad_token_id  # noqa: E402


def shard(model: torch.nn.Module, world: int) -> None:
    """FSDP2 as accelerate applies it for TRANSFORMER_BASED_WRAP: each unsplittable block, then the root."""
    mesh = init_device_mesh("cpu", (world,))
    blocks = set(getattr(model.base_model.model, "_no_split_modules", None) or [])
    for module in model.modules():
        if type(module).__name__ in blocks:
            fully_shard(module, mesh=mesh)
    fully_shard(model, mesh=mesh)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--stop-at", type=int, default=0)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    args = parser.parse_args()
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    config = load_config(None, args.overrides)
    ft = config.finetune
    torch.manual_seed(ft.seed)
    lm = load_base(config, "cpu", rank == 0)
    pad_id = pad_token_id(lm.tokenizer)
    train_set, _ = split(load_examples(args.data, lm.tokenizer, ft)[1], ft.eval_fraction, ft.seed)
    model = wrap_model(lm.model, ft)
    model.train()
    shard(model, world)
    params = [p for p in model.parameters() if p.requires_grad]
    assert all(type(p).__name__ == "DTensor" for p in params)  # the weights really are shards
    total = count_steps(ft, len(train_set), world)
    optimizer, scheduler = build_optimizer(params, ft, total)
    step, losses = 0, []
    if args.resume:
        folder = latest_checkpoint(args.run_dir)
        full, state = read_checkpoint(folder)
        restore(model, optimizer, full)
        scheduler.load_state_dict(state["scheduler"])
        restore_rng(folder)
        step, losses = state["step"], state["losses"]
    batches = micro_batches(train_set, ft.batch_size, ft.seed, rank, world)
    for _ in range(step * ft.grad_accum):
        next(batches)
    while step < total:
        loss = model(**collate(next(batches), pad_id)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        step += 1
        losses.append(round(float(loss.detach()), 6))
        if step % ft.save_every == 0 and step < total:
            full = gather(model, optimizer)
            if rank == 0:
                save_checkpoint(args.run_dir, step, full, scheduler, {"losses": losses})
            dist.barrier()
            if step == args.stop_at:
                os._exit(3)  # interrupted right after a complete checkpoint, as a killed run would be
    full = gather(model, optimizer)
    if rank == 0:
        save_file(full.weights, args.out)
        print("losses", losses, flush=True)
    # Both processes leave together, and skip the interpreter's teardown: gloo's worker threads can still hold
    # work with Python references then, and destroying it there aborts a process now and again ("terminate
    # called without an active exception"), after everything was written.
    dist.barrier()
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()

"""The same trainer on N processes (``torchrun``): what must be shared, and how. Taught in notebook 08.

    torchrun --standalone --nproc_per_node 2 -m instdisc_lesson train --data quick --objective nce --epochs 3

Each process (a *rank*) holds a full copy of the network, the data and the memory bank. One step:

    order  = broadcast(randperm(n))                    # rank 0 draws the epoch's order; all ranks use it
    idx    = global_batch.chunk(W)[rank]               # a disjoint shard of every global batch
    loss   = objective(model(augment(x[idx])), idx)    # local: this rank's B / W images
    loss.backward()                                    # DDP averages the network's gradients over ranks
    average_gradients(objective)                       # ... and we average the objective's own (eq. 1's W,
                                                       #     PIC's sparse weight rows) the same way
    optimizer.step()                                   # identical gradients -> identical parameters
    f_all, idx_all = all_gather(f, idx)                # every rank sees the whole global batch ...
    objective.after_step(f_all, idx_all)               # ... so every bank (PIC queue) gets the same update

so the banks stay *bit-identical* on all ranks, and W processes with B / W images each write the same
bank update as one process with B. NCE's Z (eq. 7) is estimated from the scores of all ranks
(:func:`all_logsumexp`), so it is one number everywhere; each rank draws its own noise rows from its
(identical) bank. The alternative, *sharding* the bank (each rank stores n / W rows and the noise
scores are gathered), saves memory at ImageNet scale; notebook 08 weighs the two.

With one process (no ``torchrun``) every function here is the identity and costs nothing.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def launched_by_torchrun() -> bool:
    """True in a process that ``torchrun`` started with more than one process in the job."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: str | None = None) -> str | None:
    """Join the job ``torchrun`` started (gloo on CPU, NCCL on CUDA); returns the device this rank uses.

    Without ``torchrun`` nothing happens and ``device`` is returned unchanged.
    """
    if not launched_by_torchrun() or dist.is_initialized():
        return device
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and (device is None or device.startswith("cuda"))
    if use_cuda:
        if local >= torch.cuda.device_count():
            raise ValueError(f"torchrun started more processes per node than there are GPUs ({torch.cuda.device_count()}): "
                             "use --nproc_per_node at most the number of GPUs, or --device cpu")
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    dist.init_process_group("nccl" if use_cuda else "gloo")
    return device


def wrap(model: torch.nn.Module, device: torch.device, sync_batchnorm: bool = False):
    """``(model, net)``: the network and what a step calls. With one process both are ``model``; under torchrun
    ``net`` is it wrapped in DistributedDataParallel (and with ``sync_batchnorm`` the model's BatchNorm layers
    use the global batch's statistics)."""
    if world_size() == 1:
        return model, model
    from torch.nn.parallel import DistributedDataParallel

    if sync_batchnorm:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model, DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait until every rank gets here."""
    if world_size() > 1:
        dist.barrier()


def broadcast(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Rank ``src``'s ``tensor`` on every rank (in place)."""
    if world_size() > 1:
        dist.broadcast(tensor, src)
    return tensor


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Rank 0's buffers (BatchNorm's running statistics) on every rank. DDP sends them at the start of
    each forward, so after an epoch's last step each rank still holds its own shard's: this evens them
    out before kNN evaluation and checkpoints."""
    if world_size() > 1:
        for buffer in module.buffers():
            dist.broadcast(buffer, 0)


def all_gather_cat(tensor: torch.Tensor, sizes: list[int] | None = None) -> torch.Tensor:
    """Every rank's ``tensor`` concatenated along dim 0 in rank order; the ranks' row counts may differ.

    ``sizes``: each rank's row count, when the host knows it (a batch's shards come from splitting it, so the
    trainer does). Without it the counts are gathered and read back to the host, a sync: only PIC's sparse
    gradient, whose rows no host knows in advance, needs that."""
    if world_size() == 1:
        return tensor
    if sizes is None:
        counts = [torch.zeros(1, dtype=torch.long, device=tensor.device) for _ in range(world_size())]
        dist.all_gather(counts, torch.tensor([len(tensor)], device=tensor.device))
        sizes = [int(count) for count in counts]
    padded = torch.zeros((max(sizes), *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
    padded[:len(tensor)] = tensor
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([part[:size] for part, size in zip(parts, sizes)])


def all_mean(value: torch.Tensor) -> torch.Tensor:
    """The mean of ``value`` over ranks (a new tensor)."""
    if world_size() == 1:
        return value
    value = value.clone()
    dist.all_reduce(value)
    return value / world_size()


def all_logsumexp(x: torch.Tensor) -> tuple[torch.Tensor, int | torch.Tensor]:
    """``log sum exp`` over every element of ``x`` on every rank, and how many elements that was: the
    same two numbers on all ranks (NCE's Z, eq. 7, from the whole global batch). Under torchrun the count
    stays a tensor (reading it would be a host sync in every step)."""
    local = torch.logsumexp(x.flatten().float(), 0)
    if world_size() == 1:
        return local, x.numel()
    one_each = [1] * world_size()
    lse = all_gather_cat(local.view(1), one_each)  # (W,)
    count = all_gather_cat(torch.tensor([x.numel()], device=x.device), one_each).sum()
    return torch.logsumexp(lse, 0), count


def average_gradients(parameters) -> None:
    """Average the gradients of ``parameters`` over ranks, as DDP does for the network's.

    A dense gradient is all-reduced. A sparse one (PIC's weight rows) is all-gathered as (rows, values)
    and summed row by row, so every rank steps the union of the rows any rank touched; how many rows each rank
    has is data-dependent, so gathering them reads the counts back to the host (PIC's exception, ``pic.py``).
    """
    W = world_size()
    if W == 1:
        return
    for p in parameters:
        if p.grad is None:
            continue
        if p.grad.is_sparse:
            grad = p.grad.coalesce()
            rows = all_gather_cat(grad.indices()[0])
            values = all_gather_cat(grad.values())
            p.grad = torch.sparse_coo_tensor(rows.view(1, -1), values / W, grad.shape).coalesce()
        else:
            dist.all_reduce(p.grad)
            p.grad /= W


def replica_bank(steps: int = 4, n: int = 1000, dim: int = 16, batch: int = 64, seed: int = 0) -> torch.Tensor:
    """A memory bank after ``steps`` global batches of random unit features, written the trainer's way:
    each rank takes its shard of the batch, and the shards are all-gathered before the update. With one
    process this is the plain update, the reference (notebook 08 runs it on one and on two processes)."""
    import torch.nn.functional as F

    from .memory_bank import MemoryBank

    g = torch.Generator().manual_seed(seed)  # the same stream on every rank: the same start, the same batches
    memory = MemoryBank(n, dim, generator=g)
    for _ in range(steps):
        idx = torch.randperm(n, generator=g)[:batch]
        features = F.normalize(torch.randn(batch, dim, generator=g), dim=1)
        shards = idx.tensor_split(world_size())
        sizes, mine = [len(shard) for shard in shards], (shards[rank()], features.tensor_split(world_size())[rank()])
        memory.update(all_gather_cat(mine[0], sizes), all_gather_cat(mine[1], sizes))
    return memory.bank


def _spawned(rank: int, world: int, init_file: str, out: str, fn, args) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        torch.save(fn(*args), os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def spawn(fn, world: int, *args) -> list:
    """Run ``fn(*args)`` on ``world`` local CPU processes joined by gloo, as torchrun would; returns each
    rank's result, in rank order. ``fn`` must be importable (defined in a module, not in a notebook cell).
    For the tests and notebook 08."""
    import tempfile

    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_spawned, args=(world, os.path.join(tmp, "init"), tmp, fn, args), nprocs=world)
        return [torch.load(os.path.join(tmp, f"rank{r}.pt"), weights_only=False) for r in range(world)]

"""Data-parallel plumbing of the image model under torchrun: each rank's share of the rows, the DDP wrapping,
sums over ranks.

One process never touches any of it (``World.distributed`` is False): its numerics stay those of a
plain loop. With N ranks each takes ``batch_size / N`` rows of a disjoint share, so the global batch,
the step count and the loss (a global weighted mean) stay those of one process.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from rakuten.models.resnet50.config import ResnetConfig
from rakuten.runtime.distributed import World
from rakuten.runtime.torch_setup import Runtime


class ShardedWeightedSampler(torch.utils.data.Sampler):
    """``WeightedRandomSampler`` for N ranks: every rank draws the same seeded sample of ``num_samples``
    rows (seed + epoch), padded to a multiple of N, and keeps every N-th index from its rank, so the
    ranks' shares are disjoint parts of one draw of the size one process would make."""

    def __init__(self, weights: np.ndarray, num_samples: int, rank: int, size: int, seed: int):
        self.weights = torch.as_tensor(np.asarray(weights, dtype=np.float64))
        self.num_samples, self.rank, self.size, self.seed, self.epoch = num_samples, rank, size, seed, 0
        self.per_rank = math.ceil(num_samples / size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.per_rank

    def __iter__(self):
        gen = torch.Generator().manual_seed(self.seed + self.epoch)
        drawn = torch.multinomial(self.weights, self.num_samples, replacement=True, generator=gen).tolist()
        drawn += drawn[: self.per_rank * self.size - len(drawn)]
        return iter(drawn[self.rank :: self.size])


def train_sampler(dataset, weights: np.ndarray | None, cfg: ResnetConfig, here: World):
    """The training sampler: None (the loader shuffles) or a ``WeightedRandomSampler`` in one process;
    with torchrun, each rank's disjoint share (``DistributedSampler``, or :class:`ShardedWeightedSampler`)."""
    if not here.distributed:
        if weights is None:
            return None
        gen = torch.Generator().manual_seed(cfg.seed)
        return torch.utils.data.WeightedRandomSampler(weights, len(weights), replacement=True, generator=gen)
    if weights is not None:
        return ShardedWeightedSampler(weights, len(weights), here.rank, here.size, cfg.seed)
    return torch.utils.data.DistributedSampler(
        dataset, num_replicas=here.size, rank=here.rank, shuffle=True, seed=cfg.seed
    )


def wrap_ddp(net: torch.nn.Module, runtime: Runtime, here: World) -> torch.nn.Module:
    """``net`` wrapped for data-parallel training (DDP averages the gradients; every parameter is used).

    On CUDA its BatchNorm layers become SyncBatchNorm first: each rank sees batch_size / N rows, and
    statistics over the global batch keep the normalisation (and so the optimisation) of one process.
    torch has no CPU SyncBatchNorm, so gloo ranks normalise over their own share (DDP broadcasts rank
    0's running statistics every step).
    """
    if runtime.device == "cuda":
        net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
        return torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[here.local_rank], find_unused_parameters=False
        )
    return torch.nn.parallel.DistributedDataParallel(net, find_unused_parameters=False)


def global_sum(values: torch.Tensor) -> torch.Tensor:
    """The sum of ``values`` over all ranks (a copy; no gradient)."""
    import torch.distributed as dist

    total = values.detach().clone()
    dist.all_reduce(total)
    return total

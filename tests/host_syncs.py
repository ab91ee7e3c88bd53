"""Counting what a training step reads back from the device: the tests' probe for the sync promise."""
import torch


class HostSyncs(torch.overrides.TorchFunctionMode):
    """Counts the Python-level calls that wait for the device: ``reads`` (a tensor's value read back: item, bool,
    int, float, tolist, index) and ``shapes`` (an output whose size depends on the data, which a CUDA device must
    report back before the next op can be queued: unique, coalesce, nonzero, masked_select)."""

    READS = {torch.Tensor.item, torch.Tensor.__bool__, torch.Tensor.__int__, torch.Tensor.__float__,
             torch.Tensor.tolist, torch.Tensor.__index__}
    SHAPES = {torch.unique, torch.Tensor.unique, torch.Tensor.coalesce, torch.nonzero, torch.Tensor.nonzero,
              torch.masked_select, torch.Tensor.masked_select}

    def __init__(self):
        super().__init__()
        self.reads = self.shapes = 0

    @property
    def count(self) -> int:
        return self.reads + self.shapes

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.reads += func in self.READS
        self.shapes += func in self.SHAPES
        return func(*args, **(kwargs or {}))

"""Lets a CUDA build of torchvision import beside the CPU torch (bench/compressai/setup.sh): on the first
`import torchvision`, load its compiled operators if they load; if not, declare the schemas of the two operators
its import registers fake kernels for (nms, qnms), without kernels. Nothing else changes: torchvision.ops.nms
raises if called, and CompressAI never calls it."""
import importlib.abc
import importlib.machinery
import os
import sys


class _Declare(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != "torchvision":
            return None
        sys.meta_path.remove(self)  # once
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or not spec.submodule_search_locations:
            return None
        import torch

        try:
            torch.ops.load_library(os.path.join(list(spec.submodule_search_locations)[0], "_C.so"))
        except (OSError, ImportError):
            for op in ("nms", "qnms"):
                if not hasattr(torch.ops.torchvision, op):
                    torch.library.define(f"torchvision::{op}", "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        return None  # the normal import goes on


if not any(isinstance(f, _Declare) for f in sys.meta_path):
    sys.meta_path.insert(0, _Declare())

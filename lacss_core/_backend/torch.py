"""The PyTorch backend: eager by default, ``torch.compile`` on request, autograd ``backward``."""

from __future__ import annotations

import os
import shutil

import torch

from lacss_core._backend._interface import DEFAULT
from lacss_core._backend._interface import Backend as _Base

# Inductor, torch.compile's default compiler, builds C++ kernels for the CPU.
_CXX = ("c++", "g++", "clang++")


class Backend(_Base):
    name = "torch"
    compile_mode = "compile"
    compiles_by_default = False

    def compile_available(self):
        """``LACSS_TORCH_COMPILE=1`` or ``0`` says so; otherwise whether a C++ compiler (which
        inductor needs on the CPU) is on PATH."""
        flag = os.environ.get("LACSS_TORCH_COMPILE")
        if flag in ("0", "1"):
            return flag == "1"
        return any(shutil.which(cxx) for cxx in _CXX)

    def compile(self, function, options=DEFAULT):
        """``torch.compile(function)`` with ``options``, or ``function`` when compiling is off."""
        if not self.compiles(options):
            return function
        return torch.compile(
            function, dynamic=options.dynamic, mode=options.mode, fullgraph=options.fullgraph
        )

    def compile_with_variables(self, function, variables, options=DEFAULT):
        """``function`` (compiled) run without autograd; torch reads ``variables`` in place."""
        compiled = self.compile(function, options)  # the variables are read and set in place

        def call(*args):
            with torch.no_grad():
                return compiled(*args)

        return call

    def grad(self, function, argnum, options=DEFAULT):
        """The gradient of scalar ``function`` with respect to argument ``argnum`` (autograd)."""
        compiled = self.compile(function, options)

        def gradient(*args):
            args = list(args)
            leaf = args[argnum].detach().clone().requires_grad_(True)
            args[argnum] = leaf
            compiled(*args).backward()
            return leaf.grad

        return gradient

    def no_grad(self):
        """A context in which no autograd graph is recorded."""
        return torch.no_grad()

    def default_data_format(self):
        """``"channels_first"``, whatever ``keras.config.image_data_format()`` says: Keras
        3.15's torch convolution transposes every channels-last input to channels-first and its
        output back (two layout copies per conv; fixed upstream in keras PR #23199, not released).
        8 x (Conv3x3 + BN + ReLU) at 256^2 on a CPU: 0.376 s channels-last, 0.257 s first."""
        return "channels_first"

    def block_until_ready(self, tree):
        """Wait for queued CUDA work (if any); returns ``tree``."""
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return tree

    def device_kind(self):
        """``"gpu"`` when CUDA is available, else ``"cpu"``."""
        return "gpu" if torch.cuda.is_available() else "cpu"

    def disable_tf32(self):
        """Full float32 matrix products and convolutions (no TF32), for exact comparisons."""
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False

    def process_index_and_count(self):
        """``(rank, world size)`` of ``torch.distributed``, ``(0, 1)`` when not initialised."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1

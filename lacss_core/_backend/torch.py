"""The PyTorch backend: eager by default, ``torch.compile`` on request, autograd ``backward``."""

from __future__ import annotations

import functools
import os
import shutil
import types

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
        _create_keras_call_context()
        return torch.compile(
            _with_own_code(function),
            dynamic=options.dynamic,
            mode=options.mode,
            fullgraph=options.fullgraph,
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

    def outside_compiler(self, function):
        """``torch.compiler.disable(function)``: dynamo runs it eagerly instead of tracing it.
        For data-dependent loops (NMS): Keras' torch ``while_loop`` is a Python loop, so every
        condition would break the graph and every new trip count compile again."""
        return torch.compiler.disable(function)

    def pad_zeros(self, x, widths):
        """``torch.nn.functional.pad``. ``keras.ops.pad`` builds a named ``Pad`` operation on
        every call, which bumps a global name counter that ``torch.compile`` guards on: every
        call would compile again (``TORCH_LOGS=recompiles``: ``object_name_uids['pad']``)."""
        from keras import ops

        flat = [n for before, after in reversed(widths) for n in (before, after)]
        return torch.nn.functional.pad(ops.convert_to_tensor(x), flat)

    def segment_max(self, data, segment_ids, num_segments):
        """One ``scatter_reduce(amax)`` on 1-D data. Keras' torch ``segment_max`` first widens
        the ids with ``repeat_interleave`` by a tensor count, a dynamic-shape op that breaks
        ``torch.compile``'s graph."""
        from keras import ops

        data = ops.convert_to_tensor(data)
        ids = ops.convert_to_tensor(segment_ids).long()
        empty = torch.full((num_segments,), -torch.inf, dtype=data.dtype, device=data.device)
        return empty.scatter_reduce(0, ids, data, "amax")

    def conv2d(self, inputs, kernel, bias, strides, data_format):
        """Channels-first: ``F.conv2d`` with the bias inside the kernel call (no separate add)
        and, without autodiff, the kernel in torch's ``(out, in, kh, kw)`` layout kept from
        call to call (Keras' torch conv permutes and copies every kernel on every call; the
        kept copy is renewed whenever the variable changes). Channels-last: Keras' own."""
        if data_format != "channels_first":
            return super().conv2d(inputs, kernel, bias, strides, data_format)
        from keras import ops

        x = ops.convert_to_tensor(inputs)
        weight = _torch_kernel(kernel)
        b = None if bias is None else ops.convert_to_tensor(bias).to(weight.dtype)
        x, padding = _same_padding(x, weight.shape[2:], tuple(strides))
        return torch.nn.functional.conv2d(x, weight, b, stride=tuple(strides), padding=padding)

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


def _torch_kernel(kernel):
    """The ``(kh, kw, in, out)`` Keras kernel as a contiguous ``(out, in, kh, kw)`` tensor. Kept
    on the variable between calls when no gradient is recorded and the value is the variable's
    own storage (not an autocast copy); the key (storage address and in-place version) changes
    with every ``assign``."""
    from keras import ops

    value = ops.convert_to_tensor(kernel)
    own = getattr(kernel, "_value", None) is value
    # Under torch.compile the permute is part of the graph (and a Python-side cache would only
    # break it).
    if torch.is_grad_enabled() or not own or torch.compiler.is_compiling():
        return value.permute(3, 2, 0, 1).contiguous()
    key = (value.data_ptr(), value._version, value.dtype, value.device)
    kept = getattr(kernel, "_lacss_torch_kernel", None)
    if kept is None or kept[0] != key:
        kept = (key, value.permute(3, 2, 0, 1).contiguous())
        kernel._lacss_torch_kernel = kept
    return kept[1]


def _same_padding(x, kernel_size, strides):
    """``(x, padding)`` for ``F.conv2d`` with TensorFlow's "same": output ``ceil(n / s)``, the odd
    pixel of padding at the bottom/right. Symmetric padding is passed to the conv; otherwise
    ``x`` is padded here and ``padding`` is 0."""
    pads = []
    for n, k, s in zip(x.shape[2:], kernel_size, strides, strict=True):
        total = max((-(-n // s) - 1) * s + k - n, 0)
        pads.append((total // 2, total - total // 2))
    if all(before == after for before, after in pads):
        return x, tuple(before for before, _ in pads)
    (top, bottom), (left, right) = pads
    return torch.nn.functional.pad(x, (left, right, top, bottom)), 0


def _create_keras_call_context():
    """Make Keras create its global layer-call context now, with one trivial eager layer call.
    Keras creates it on the first layer call of the process; a function ``torch.compile`` traces
    before that guards on its absence and compiles again on its next call."""
    import keras

    keras.layers.Identity()(torch.zeros(1))


def _with_own_code(function):
    """``function`` with a code object of its own (when it is a plain Python function). Dynamo
    keeps at most ``recompile_limit`` (8) compiled versions per code object, and closures of one
    ``def`` (prediction's stages, one per stage, settings and bucket) share theirs: the ninth
    would run eagerly."""
    if not isinstance(function, types.FunctionType):
        return function
    own = types.FunctionType(
        function.__code__.replace(),
        function.__globals__,
        function.__name__,
        function.__defaults__,
        function.__closure__,
    )
    return functools.update_wrapper(own, function)

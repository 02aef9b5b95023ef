"""The interface every backend module of ``lacss_core._backend`` implements.

``keras.ops`` already hides the frameworks for the math. What it does not hide is how a function
is compiled, how autodiff is switched off or asked for, which device runs, and the process group:
those are the methods of :class:`Backend` below, and nothing outside ``lacss_core._backend``
branches on the backend's name to do them.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Sequence


@dataclasses.dataclass(frozen=True)
class CompileOptions:
    """How :meth:`Backend.compile`, :meth:`Backend.compile_with_variables` and
    :meth:`Backend.grad` compile.

    Attributes:
        enabled: ``True`` compiles (``jax.jit``, ``torch.compile``), ``False`` runs eagerly,
            ``None`` (the default) does what the backend does unless asked: JAX compiles (one
            XLA program per input shape, cheap and always worth it), torch runs eagerly (a
            first ``torch.compile`` call of the whole model takes minutes on a CPU; opt in).
        dynamic: ``torch.compile``'s ``dynamic``. ``False`` (the default) specialises on every
            input shape: one graph per shape, so callers pad inputs to a few sizes. ``None``
            lets dynamo decide after a recompile, ``True`` marks every size dynamic. JAX always
            specialises per shape and ignores it.
        mode: ``torch.compile``'s ``mode`` (``None``, ``"default"``, ``"reduce-overhead"``,
            ``"max-autotune"``); JAX ignores it.
        fullgraph: ``torch.compile``'s ``fullgraph`` (error on a graph break instead of
            splitting); JAX ignores it (a jitted function is always one graph).
    """

    enabled: bool | None = None
    dynamic: bool | None = False
    mode: str | None = None
    fullgraph: bool = False


#: The backend's default (JAX compiles, torch runs eagerly).
DEFAULT = CompileOptions()
#: Compile, whatever the backend does by default.
COMPILED = CompileOptions(enabled=True)
#: Run eagerly.
EAGER = CompileOptions(enabled=False)


class Backend:
    """The framework-specific operations lacss-core needs; one subclass per Keras backend.

    A subclass lives in ``lacss_core/_backend/<name>.py`` as ``Backend`` and may import its
    framework at module level: the module is imported only when that backend is active.
    Tensors below are the backend's own (what ``keras.ops`` returns).
    """

    #: The Keras backend name, as in ``KERAS_BACKEND``.
    name: str = ""
    #: The conformance suite's name for the compiled mode of this backend ("jit", "compile").
    compile_mode: str = "compiled"
    #: What ``CompileOptions(enabled=None)`` means here.
    compiles_by_default: bool = False

    # -------------------------------------------------------------- compiling
    def compile_available(self) -> bool:
        """Whether :meth:`compile` with ``enabled=True`` can work in this environment."""
        return True

    def compiles(self, options: CompileOptions) -> bool:
        """Whether ``options`` ask for a compiled function on this backend."""
        return self.compiles_by_default if options.enabled is None else bool(options.enabled)

    def compile(self, function: Callable, options: CompileOptions = DEFAULT) -> Callable:
        """``function`` compiled per ``options`` (or itself when they say eager).

        ``function`` takes tensors (and nested lists/tuples/dicts of them) positionally; Python
        values it needs (sizes, thresholds, ``training``) must be closed over, not passed.
        """
        raise NotImplementedError

    def compile_with_variables(
        self,
        function: Callable,
        variables: Sequence,
        options: CompileOptions = DEFAULT,
    ) -> Callable:
        """``function`` (which reads and may update the Keras ``variables``) compiled, without
        autodiff.

        The result is called like ``function``. The variables' current values are used at each
        call (assign new weights and call again: no recompilation), and any value ``function``
        assigns to them (BatchNorm moving statistics with ``training=True``) is written back after
        the call, as an eager call would do. On JAX ``function`` is traced once per input shape as
        a pure function of the variables' values (``keras.StatelessScope``); on torch the
        variables are used in place. Gradients never flow (``no_grad``).
        """
        raise NotImplementedError

    def grad(self, function: Callable, argnum: int, options: CompileOptions = DEFAULT) -> Callable:
        """A function with ``function``'s arguments returning the gradient of the scalar
        ``function(*args)`` with respect to ``args[argnum]`` (a tensor of its shape), the
        forward (and on JAX the backward) pass compiled per ``options``."""
        raise NotImplementedError

    def no_grad(self) -> contextlib.AbstractContextManager:
        """A context in which operations record nothing for autodiff."""
        return contextlib.nullcontext()

    def block_until_ready(self, tree):
        """Wait until every tensor in ``tree`` is computed (asynchronous dispatch); return it."""
        return tree

    def outside_compiler(self, function: Callable) -> Callable:
        """``function``, run as it is when called from a compiled function. Here (``jax.jit``)
        it is traced into the program like any other code."""
        return function

    # -------------------------------------------------------------- ops
    def pad_zeros(self, x, widths):
        """``x`` zero padded by ``widths``, one ``(before, after)`` pair of non-negative Python
        ints per axis: ``keras.ops.pad``."""
        from keras import ops

        return ops.pad(x, widths)

    def segment_max(self, data, segment_ids, num_segments: int):
        """``(num_segments,)`` maxima of the 1-D ``data`` per ``segment_ids`` (int, in
        ``[0, num_segments)``), ``-inf`` where a segment is empty: ``keras.ops.segment_max``."""
        from keras import ops

        return ops.segment_max(data, segment_ids, num_segments=num_segments)

    # -------------------------------------------------------------- layers
    def conv2d(self, inputs, kernel, bias, strides, data_format: str):
        """A "same"-padded 2-D convolution plus ``bias`` (or None): what ``keras.layers.Conv2D``
        computes with ``padding="same"``, dilation 1, one group. ``kernel`` is the layer's
        ``(kh, kw, in, out)`` variable, ``bias`` its ``(out,)`` one; ``strides`` a pair. Here
        Keras' own ``ops.conv`` and a bias ``add``."""
        from keras import ops

        outputs = ops.conv(inputs, kernel, strides=strides, padding="same", data_format=data_format)
        if bias is None:
            return outputs
        shape = (1, 1, 1, -1) if data_format == "channels_last" else (1, -1, 1, 1)
        return ops.add(outputs, ops.reshape(bias, shape))

    # -------------------------------------------------------------- layouts
    def default_data_format(self) -> str:
        """The feature-map layout ``Lacss(data_format=None)`` runs in: ``"channels_last"`` or
        ``"channels_first"``. Here Keras' ``keras.config.image_data_format()``."""
        import keras

        return keras.config.image_data_format()

    # -------------------------------------------------------------- devices and processes
    def device_kind(self) -> str:
        """``"gpu"`` when the default device is a GPU, else ``"cpu"`` (or the platform name)."""
        raise NotImplementedError

    def disable_tf32(self) -> None:
        """Keep float32 matmuls and convolutions at float32 accuracy on GPUs (TF32 off)."""

    def process_index_and_count(self) -> tuple[int, int]:
        """``(index, count)`` of this process in a multi-process job; ``(0, 1)`` alone."""
        return 0, 1

"""The JAX backend: ``jax.jit``, ``jax.grad``, stateless calls over the variables' values."""

from __future__ import annotations

import jax
import keras

from lacss_core._backend._interface import DEFAULT
from lacss_core._backend._interface import Backend as _Base


class Backend(_Base):
    name = "jax"
    compile_mode = "jit"
    compiles_by_default = True

    def compile(self, function, options=DEFAULT):
        """``jax.jit(function)``, or ``function`` itself when ``options`` turn compiling off."""
        return jax.jit(function) if self.compiles(options) else function

    def compile_with_variables(self, function, variables, options=DEFAULT):
        """``function`` compiled as a pure function of the current values of ``variables``
        (read at each call, so updated weights are used)."""
        if not self.compiles(options):
            return function
        variables = list(variables)

        def pure(values, *args):
            mapping = list(zip(variables, values, strict=True))
            with keras.StatelessScope(state_mapping=mapping) as scope:
                initial = [scope.get_current_value(v) for v in variables]
                outputs = function(*args)
            # Only what function assigned leaves the program (decided at trace time).
            updates = {
                i: scope.get_current_value(v)
                for i, v in enumerate(variables)
                if scope.get_current_value(v) is not initial[i]
            }
            return outputs, updates

        jitted = jax.jit(pure)

        def call(*args):
            outputs, updates = jitted([v.value for v in variables], *args)
            for i, value in updates.items():
                variables[i].assign(value)
            return outputs

        return call

    def grad(self, function, argnum, options=DEFAULT):
        """The (compiled) gradient of scalar ``function`` with respect to argument ``argnum``."""
        return self.compile(jax.grad(function, argnums=argnum), options)

    def block_until_ready(self, tree):
        """Wait for asynchronous computation of every array in ``tree``; returns ``tree``."""
        return jax.block_until_ready(tree)

    def device_kind(self):
        """``"gpu"``, ``"cpu"`` or ``"tpu"``: the platform of JAX's first device."""
        platform = jax.devices()[0].platform
        return "gpu" if platform in ("gpu", "cuda", "rocm") else platform

    def disable_tf32(self):
        """Full float32 matrix products (no TF32 on GPUs), for exact comparisons."""
        jax.config.update("jax_default_matmul_precision", "float32")

    def process_index_and_count(self):
        """``(index, count)`` of this process among the JAX processes."""
        return jax.process_index(), jax.process_count()

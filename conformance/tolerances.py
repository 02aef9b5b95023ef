"""Every tolerance the conformance suite uses, in one place (SPEC 1, issue: conformance).

Discrete outputs (NMS selections and order, target masks, patch origins, label images) must match
exactly. Float outputs and losses are compared with the float64 oracle at FLOAT_RTOL / FLOAT_ATOL.
Loss gradients (backend autodiff in float32) are compared with central finite differences of the
float64 oracle at GRAD_RTOL; GRAD_ATOL_FRACTION of the largest gradient entry absorbs entries that
are zero up to float32 round-off, and the absolute tolerance is never below the finite differences'
own rounding error, FD_ROUNDING * |loss| / FD_STEP (a float64 loss of size |loss| is evaluated to
a few eps; only gradients of order 1e-9 and below notice). The runner's table reports, per case,
the absolute tolerance that applied, how much of the tolerance the worst entry used, and how many
entries passed only thanks to the absolute tolerance.
"""

FLOAT_RTOL = 1e-5
FLOAT_ATOL = 1e-6

GRAD_RTOL = 1e-3
GRAD_ATOL_FRACTION = 1e-4  # the worst case in docs/conformance.md uses 6% of its tolerance
FD_STEP = 1e-6  # central-difference step on float64 inputs
FD_ROUNDING = 4 * 2.0**-52  # a few float64 eps: the relative rounding error of one loss value

# The model rows: the float32 network (about 20 convolutions deep on the tiny preset) against the
# float64 layer references of lacss_core.oracle.network; O(1) activations, so float32 rounding
# accumulates to a few 1e-6 (docs/conformance.md reports how much of this each row used).
MODEL_RTOL = 1e-4
MODEL_ATOL = 1e-5

# The mixed-precision model rows (mixed_bfloat16 everywhere, mixed_float16 on GPUs): the same
# network computing in a 16-bit dtype (float32 variables, float32 output heads). bfloat16 keeps
# 8 significant bits (relative rounding 2**-9 = 0.2% per op), so the ~20 layers of O(1)
# activations drift by about 1e-2; float16 (11 bits) by about an eighth of that. Measured on
# CPU (both backends, both layouts): the LPN offsets (grid units) use 0.58-0.73 of this (max
# abs 0.03), the scores 0.11-0.14, the patches 0.06-0.08, the boundary map 0.02.
MODEL_HALF_RTOL = 5e-2
MODEL_HALF_ATOL = 2e-2

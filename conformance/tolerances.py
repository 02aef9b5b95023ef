"""Every tolerance the conformance suite uses, in one place (SPEC 1, issue: conformance).

Discrete outputs (NMS selections and order, target masks, patch origins, label images) must match
exactly. Float outputs and losses are compared with the float64 oracle at FLOAT_RTOL / FLOAT_ATOL.
Loss gradients (backend autodiff in float32) are compared with central finite differences of the
float64 oracle at GRAD_RTOL; GRAD_ATOL_FRACTION of the largest gradient entry absorbs entries that
are zero up to float32 round-off.
"""

FLOAT_RTOL = 1e-5
FLOAT_ATOL = 1e-6

GRAD_RTOL = 1e-3
GRAD_ATOL_FRACTION = 1e-3
FD_STEP = 1e-6  # central-difference step on float64 inputs

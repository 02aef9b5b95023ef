"""``python -m lacss_core.conformance``: run the conformance suite on every installed backend.

Each backend runs in its own subprocess (Keras fixes its backend per process). Every comparison the
suite makes is collected and summarised as a table: function x backend x mode x device, with the
largest absolute and relative errors, the tolerance, the largest share of it a case used and
pass/fail; gradient cases that needed the absolute tolerance are listed one by one. The table is
printed and written as JSON and Markdown. The exit status is non-zero if any backend fails.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from collections import defaultdict

from lacss_core._backend import SUPPORTED as ALL_BACKENDS

SUITE_DIR = os.path.dirname(os.path.abspath(__file__))


def parse_args(argv=None, prog="python -m lacss_core.conformance"):
    p = argparse.ArgumentParser(prog=prog, description=__doc__)
    p.add_argument(
        "--backends",
        nargs="+",
        choices=ALL_BACKENDS,
        help="backends to check (default: every installed one)",
    )
    p.add_argument(
        "--device",
        choices=("cpu", "gpu"),
        default="cpu",
        help="cpu hides GPUs from the backends; gpu fails unless one is visible",
    )
    p.add_argument(
        "--output",
        default="conformance-report",
        help="path prefix of the .json and .md reports (default: %(default)s)",
    )
    p.add_argument("--pytest-args", default="", help="extra arguments for pytest, quoted")
    return p.parse_args(argv)


def installed_backends() -> list[str]:
    return [b for b in ALL_BACKENDS if importlib.util.find_spec(b) is not None]


def run_backend(backend: str, device: str, report: str, extra: list[str]) -> int:
    env = dict(os.environ, KERAS_BACKEND=backend, LACSS_CONFORMANCE_REPORT=report)
    cmd = [sys.executable, "-m", "pytest", SUITE_DIR, "-q", "-p", "no:cacheprovider", *extra]
    if device == "cpu":
        env.update(CUDA_VISIBLE_DEVICES="", JAX_PLATFORMS="cpu")
    else:
        cmd.append("--require-gpu")
    print(f"== {backend} ({device}): {' '.join(cmd)}", flush=True)
    return subprocess.call(cmd, env=env)


def _tolerance_text(check: str, rows: list[dict]) -> str:
    tolerances = sorted({r["tolerance"] for r in rows})
    if check == "grad" and len(tolerances) > 1:
        atols = [r["atol"] for r in rows]
        rtol = rows[0]["tolerance"].split(" atol")[0]
        return f"{rtol}, atol {min(atols):.1e} to {max(atols):.1e}"
    return "; ".join(tolerances)


def summarise(rows: list[dict]) -> list[dict]:
    """One row per (function, check, backend, mode, device): worst errors, the tolerance (the
    range of per-case absolute tolerances for gradients), the largest share of its tolerance a
    case used, how many cases had entries within the absolute tolerance only, all passed?"""
    groups = defaultdict(list)
    for r in rows:
        key = (r["function"], r["check"], r["backend"], r["mode"], r["device"])
        groups[key].append(r)
    table = []
    for (fn, check, backend, mode, device), rs in sorted(groups.items()):
        used = [r.get("used") for r in rs]
        table.append(
            dict(
                function=fn,
                check=check,
                backend=backend,
                mode=mode,
                device=device,
                cases=len(rs),
                max_abs=max(r["max_abs"] for r in rs),
                max_rel=max(r["max_rel"] for r in rs),
                tolerance=_tolerance_text(check, rs),
                used=None if None in used else max(used),
                cases_by_atol=sum(1 for r in rs if r.get("by_atol", 0) > 0),
                passed=all(r["passed"] for r in rs),
            )
        )
    return table


def atol_cases(rows: list[dict]) -> list[dict]:
    """The gradient cases with entries that passed only within the absolute tolerance (their
    error exceeds ``rtol * |expected|``), worst share of the tolerance first."""
    picked = [r for r in rows if r["check"] == "grad" and r.get("by_atol", 0) > 0]
    return sorted(picked, key=lambda r: -r["used"])


def _used(value) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def markdown(table: list[dict], by_atol: list[dict] = ()) -> str:
    """The summary table and, for gradients, every case that needed the absolute tolerance."""
    head = (
        "| function | check | backend | mode | device | cases | max abs err | max rel err "
        "| tolerance | used | cases within atol only | result |\n"
        "|---|---|---|---|---|---:|---:|---:|---|---:|---:|---|\n"
    )
    lines = [
        f"| {t['function']} | {t['check']} | {t['backend']} | {t['mode']} | {t['device']} "
        f"| {t['cases']} | {t['max_abs']:.2e} | {t['max_rel']:.2e} | {t['tolerance']} "
        f"| {_used(t['used'])} | {t['cases_by_atol']} | {'pass' if t['passed'] else 'FAIL'} |"
        for t in table
    ]
    text = head + "\n".join(lines) + "\n"
    if by_atol:
        text += (
            "\nGradient cases with entries within the absolute tolerance only (error above "
            "rtol x |expected|), worst first:\n\n"
            "| function | output | backend | mode | max abs grad | atol | max abs err "
            "| max rel err | entries within atol only | used |\n"
            "|---|---|---|---|---:|---:|---:|---:|---:|---:|\n"
        )
        text += "\n".join(
            f"| {r['function']} | {r['output']} | {r['backend']} | {r['mode']} "
            f"| {r['max_grad']:.2e} | {r['atol']:.1e} | {r['max_abs']:.2e} | {r['max_rel']:.2e} "
            f"| {r['by_atol']} of {r['entries']} | {r['used']:.2f} |"
            for r in by_atol
        )
        text += "\n"
    return text


def main(argv=None, prog="python -m lacss_core.conformance") -> int:
    args = parse_args(argv, prog)
    backends = args.backends or installed_backends()
    if not backends:
        print("no backend installed: pip install 'lacss-core[jax]' or 'lacss-core[torch]'")
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        report = os.path.join(tmp, "rows.jsonl")
        codes = {b: run_backend(b, args.device, report, args.pytest_args.split()) for b in backends}
        rows = []
        if os.path.exists(report):
            with open(report) as f:
                rows = [json.loads(line) for line in f]
    table, by_atol = summarise(rows), atol_cases(rows)
    md = markdown(table, by_atol)
    print(md)
    from lacss_core._atomic import atomic_open

    with atomic_open(args.output + ".json") as f:
        json.dump({"exit_codes": codes, "table": table, "grad_cases_by_atol": by_atol}, f, indent=1)
    with atomic_open(args.output + ".md") as f:
        f.write(md)
    failed = [b for b, c in codes.items() if c != 0]
    print(
        f"reports: {args.output}.json, {args.output}.md; "
        + (f"FAILED backends: {failed}" if failed else "all backends passed")
    )
    return 1 if failed or not table else 0


if __name__ == "__main__":
    sys.exit(main())

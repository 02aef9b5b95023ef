"""``python -m lacss_core.conformance``: run the conformance suite on every installed backend.

Each backend runs in its own subprocess (Keras fixes its backend per process). Every comparison the
suite makes is collected and summarised as a table: function x backend x mode x device, with the
largest absolute and relative errors, the tolerance and pass/fail. The table is printed and written
as JSON and Markdown. The exit status is non-zero if any backend fails.
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


def summarise(rows: list[dict]) -> list[dict]:
    """One row per (function, check, backend, mode, device): worst errors, all passed?"""
    groups = defaultdict(list)
    for r in rows:
        key = (r["function"], r["check"], r["backend"], r["mode"], r["device"])
        groups[key].append(r)
    table = []
    for (fn, check, backend, mode, device), rs in sorted(groups.items()):
        tolerances = sorted({r["tolerance"] for r in rs})
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
                tolerance=tolerances[0]
                if len(tolerances) == 1
                else "rtol 1e-3 (atol per case)"
                if check == "grad"
                else "; ".join(tolerances),
                passed=all(r["passed"] for r in rs),
            )
        )
    return table


def markdown(table: list[dict]) -> str:
    head = (
        "| function | check | backend | mode | device | cases | max abs err | max rel err "
        "| tolerance | result |\n|---|---|---|---|---|---:|---:|---:|---|---|\n"
    )
    lines = [
        f"| {t['function']} | {t['check']} | {t['backend']} | {t['mode']} | {t['device']} "
        f"| {t['cases']} | {t['max_abs']:.2e} | {t['max_rel']:.2e} | {t['tolerance']} "
        f"| {'pass' if t['passed'] else 'FAIL'} |"
        for t in table
    ]
    return head + "\n".join(lines) + "\n"


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
    table = summarise(rows)
    md = markdown(table)
    print(md)
    from lacss_core._atomic import atomic_open

    with atomic_open(args.output + ".json") as f:
        json.dump({"exit_codes": codes, "table": table}, f, indent=1)
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

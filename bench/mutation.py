"""Per-module figures of the last mutation-testing run (docs/mutation.md), written to reports/bench/mutation.json.

Reads mutmut's results under ``mutants/`` (run ``mutmut run`` first, see docs/mutation.md) and the
list of surviving mutants judged equivalent (``EQUIVALENT`` below: mutant name -> one-line reason).

    python bench/mutation.py            # prints the table for docs/mutation.md, writes the JSON
    python bench/mutation.py --check    # also fails if a module scores under 90% or a listed
                                        # equivalent mutant is no longer a survivor

Score = (killed + timeout) / (total - equivalent): an equivalent mutant cannot be killed by any test.
"""
from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODULES = ("evaluate.py", "fusion.py", "data/split.py", "models/contract.py", "data/catalog.py",
           "text/cleaning.py", "text/pipeline.py", "image/process.py", "models/tfidf_svm.py")
# mutmut's exit codes (mutmut/stats.py): 1 and 3 killed; 0 survived; timeouts
KILLED, SURVIVED, TIMEOUT = {1, 3}, {0}, {24, -24, 152, 255, 36}
TARGET = 0.90

_EQ_DTYPE = "dtype=bool/None on values that are already bool or 0/1: same truth values"
_EQ_WARN = "which warnings are silenced while parsing: never the text returned"
_EQ_FALSY = "ftfy reads None like False (falsy), and fix_line_breaks=True is its default"
EQUIVALENT: dict[str, str] = {      # judged by reading `mutmut show <name>`; see docs/mutation.md
    "rakuten.text.cleaning.x__html_text__mutmut_11": _EQ_WARN,
    "rakuten.text.cleaning.x__html_text__mutmut_13": _EQ_WARN,
    "rakuten.text.cleaning.x__html_text__mutmut_17": _EQ_WARN,
    "rakuten.text.cleaning.x__html_text__mutmut_19": _EQ_WARN,
    "rakuten.text.cleaning.x__html_text__mutmut_6": "the name of the wrapper element: its text is the same",
    "rakuten.text.cleaning.x__html_text__mutmut_7": "the name of the wrapper element: its text is the same",
    "rakuten.text.cleaning.x_fix_encoding__mutmut_2": _EQ_FALSY,
    "rakuten.text.cleaning.x_fix_encoding__mutmut_3": _EQ_FALSY,
    "rakuten.text.cleaning.x_fix_encoding__mutmut_8": _EQ_FALSY,
    "rakuten.text.cleaning.x_truncate_words__mutmut_5": "str.rfind start None is start 0",
}


def module_name(rel: str) -> str:
    return "rakuten." + rel[:-3].replace("/", ".")


def collect(mutants: Path) -> dict[str, dict]:
    out = {}
    for rel in MODULES:
        meta = mutants / "src" / "rakuten" / (rel + ".meta")
        if not meta.is_file():
            raise SystemExit(f"{meta}: not found; run `mutmut run` first (docs/mutation.md)")
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        survived = sorted(k for k, v in codes.items() if v in SURVIVED)
        equivalent = sorted(k for k in survived if k in EQUIVALENT)
        killed = sum(v in KILLED for v in codes.values())
        timeout = sum(v in TIMEOUT for v in codes.values())
        total = len(codes)
        other = total - killed - timeout - len(survived)
        effective = total - len(equivalent)
        out[module_name(rel)] = {
            "total": total, "killed": killed, "survived": len(survived), "timeout": timeout,
            "equivalent": len(equivalent), "not_run": other,
            "score": round((killed + timeout) / effective, 4) if effective else 1.0,
            "raw_score": round((killed + timeout) / total, 4) if total else 1.0,
            "open_survivors": [k for k in survived if k not in EQUIVALENT],
        }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mutants", type=Path, default=REPO / "mutants")
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "bench" / "mutation.json")
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    figures = collect(args.mutants)
    print("| module | mutants | killed | timeout | survived | equivalent | score |")
    print("|---|---|---|---|---|---|---|")
    for name, f in figures.items():
        print(f"| {name} | {f['total']} | {f['killed']} | {f['timeout']} | {f['survived']} | {f['equivalent']} | "
              f"{100 * f['score']:.1f}% |")
    report = {"date": date.today().isoformat(), "tool": "mutmut 3.8.1", "target_score": TARGET,
              "score": "(killed + timeout) / (total - equivalent)",
              "modules": {k: {key: v[key] for key in ("total", "killed", "survived", "timeout", "equivalent", "score")}
                          for k, v in figures.items()}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    problems = [f"{k}: score {v['score']:.3f} < {TARGET}" for k, v in figures.items() if v["score"] < TARGET]
    problems += [f"{k}: {v['not_run']} mutants not run" for k, v in figures.items() if v["not_run"]]
    for k, v in figures.items():
        for name in v["open_survivors"]:
            print(f"open survivor: {name}")
    if args.check and problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

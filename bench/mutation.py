"""Per-module figures of the last mutation-testing run (docs/mutation.md), written to reports/bench/mutation.json.

Reads mutmut's results under ``mutants/`` (run ``mutmut run`` first, see docs/mutation.md) and the
list of surviving mutants judged equivalent (``EQUIVALENT`` below: mutant name -> one-line reason).

    python bench/mutation.py            # prints the table for docs/mutation.md, writes the JSON
    python bench/mutation.py --check    # also fails if a module scores under 90%, has mutants not run, or
                                        # a listed equivalent mutant measured now is no longer a survivor

Score = (killed + timeout) / (total - equivalent): an equivalent mutant cannot be killed by any test.

A module none of whose mutants has a result under ``mutants/`` (mutmut never run on it here, or its
results deleted) keeps its row from the previous report (``--out``), with the date it was measured
(``measured``, ``source: "previous report"``): those figures are of the code as it was on that date.
A module measured now gets today's date and ``source: "mutants/"``. ``core/io.py`` is scored on the
functions named in ``MODULES`` only (the output-path rule of a run); its other mutants are not scored.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# module file under src/rakuten (pyproject's [tool.mutmut] only_mutate) -> the functions scored (None: every mutant)
MODULES: dict[str, tuple[str, ...] | None] = {
    "evaluation/evaluate.py": None,
    # fusion was one module when it was last mutated; its code now spans these (pyproject's only_mutate)
    "fusion/probs.py": None,
    "fusion/weights.py": None,
    "fusion/meta.py": None,
    "fusion/strategies.py": None,
    "fusion/selection.py": None,
    "fusion/model.py": None,
    "fusion/persistence.py": None,
    "fusion/fusion.py": None,
    "data/split.py": None,
    "contracts/model_files.py": None,
    "data/ingest.py": None,
    "text/cleaning.py": None,
    "text/text_clean.py": None,
    "image/process.py": None,
    "models/tfidf_svm.py": None,
    # security-critical, added 2026-12-06: artifact hashes against dvc.lock, a run's output paths,
    # GPU claims, the preprocessing record
    "core/integrity.py": None,
    "core/io.py": ("check_run_paths", "_same_or_inside", "_writable_parent"),
    "runtime/gpus.py": None,
    "contracts/preprocessing.py": None,
    # added 2026-12-06: what one HTTP client can cost the service, the knob declarations, the embed stage
    "serving/http_guards.py": None,
    "core/config.py": None,
    "models/embed.py": None,
}
# the names these modules had before src/rakuten was regrouped into layered packages: reports written
# before then key their rows by them, and a module not rerun since keeps its row under its new name
FORMERLY: dict[str, str] = {
    "rakuten.evaluation.evaluate": "rakuten.evaluate",
    "rakuten.fusion.fusion": "rakuten.fusion",
    "rakuten.contracts.model_files": "rakuten.models.contract",
    "rakuten.data.ingest": "rakuten.data.catalog",
    "rakuten.text.text_clean": "rakuten.text.pipeline",
    "rakuten.core.integrity": "rakuten.integrity",
    "rakuten.core.io": "rakuten.io",
    "rakuten.runtime.gpus": "rakuten.gpus",
    "rakuten.contracts.preprocessing": "rakuten.preprocessing",
    "rakuten.serving.http_guards": "rakuten.http_guards",
    "rakuten.core.config": "rakuten.config",
}
# mutmut's exit codes (mutmut/stats.py): 1 and 3 killed; 0 survived; timeouts
KILLED, SURVIVED, TIMEOUT = {1, 3}, {0}, {24, -24, 152, 255, 36}
TARGET = 0.90

_EQ_DTYPE = "dtype=bool/None on values that are already bool or 0/1: same truth values"
_EQ_WARN = "which warnings are silenced while parsing: never the text returned"
_EQ_FALSY = "ftfy reads None like False (falsy), and fix_line_breaks=True is its default"
_ITER = "itertuples(index=None/True): fields are read by name, an extra Index field changes nothing"
_SORT_NONE = "groupby(sort=None): None is falsy, the same as sort=False"
_SORT_COUNT = "groupby sort order: only counts are taken from the groups"
_INT_DTYPE = "no dtype on values that are int64 already (or Int64 without missing values)"
_OBJ_DTYPE = "no dtype=object: a text column converts to an object array anyway"
_OBJ_CONCAT = "np.full without dtype=object: concatenated with an object array the result is object anyway"
_BOUNDARY = "> vs >= on a float tolerance: differs only at an exact float equality"
_LOG_ONLY = "only decides whether a warning is logged (log calls are not mutated)"
_INDEX = "reset_index(drop=False/None): adds an 'index' column that is never read"
_LABELS = "pd.array without Int64: labels infer a nullable array; nunique/dropna give the same counts"
_CODEC = "codec names are case-insensitive ('UTF-8')"
_NONE_SECTION = "params.get(section, None): a None section is not a Mapping, so it is read as {} either way"
_LAST_TRAIN = (
    "groups fill test, val, then train: a class with a train group ends with one, so 'no group in "
    "train' is 'last group not in train'"
)
EQUIVALENT: dict[str, str] = {  # judged by reading `mutmut show <name>`; see docs/mutation.md
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
    "rakuten.text.cleaning.x_truncate_words__mutmut_12": "rfind from 1: a space at 0 gives cut 0, a hard cut either "
    "way",
    # evaluate.py
    "rakuten.evaluation.evaluate.x_results_markdown__mutmut_37": _ITER,
    "rakuten.evaluation.evaluate.x_results_markdown__mutmut_38": _ITER,
    "rakuten.evaluation.evaluate.x_summary_metrics__mutmut_2": _ITER,
    "rakuten.evaluation.evaluate.x_summary_metrics__mutmut_3": _ITER,
    "rakuten.evaluation.evaluate.x_labelled_predictions__mutmut_29": _INT_DTYPE + " (model tables keep Int64 labels)",
    "rakuten.evaluation.evaluate.x_labelled_predictions__mutmut_36": _SORT_NONE,
    "rakuten.evaluation.evaluate.x_evaluate_predictions__mutmut_3": _SORT_NONE,
    # text/pipeline.py
    "rakuten.text.text_clean.x_clean_with_report__mutmut_23": _OBJ_DTYPE,
    "rakuten.text.text_clean.x_clean_with_report__mutmut_27": _OBJ_DTYPE,
    "rakuten.text.text_clean.x_duplicate_report__mutmut_5": _OBJ_DTYPE,
    "rakuten.text.text_clean.x_duplicate_report__mutmut_9": _LABELS,
    "rakuten.text.text_clean.x_duplicate_report__mutmut_11": _LABELS,
    "rakuten.text.text_clean.x_duplicate_report__mutmut_23": _SORT_COUNT,
    "rakuten.text.text_clean.x_duplicate_report__mutmut_25": _SORT_COUNT,
    "rakuten.text.text_clean.x_duplicate_report__mutmut_28": _SORT_COUNT,
    "rakuten.text.text_clean.x_duplicate_report__mutmut_37": "dropna on every column: the text column has no "
    "missing values (empty texts are filtered before)",
    "rakuten.text.text_clean.x_duplicate_report__mutmut_42": _SORT_COUNT,
    "rakuten.text.text_clean.x_duplicate_report__mutmut_44": _SORT_COUNT,
    "rakuten.text.text_clean.x_duplicate_report__mutmut_47": _SORT_COUNT,
    "rakuten.text.text_clean.x_stage_report__mutmut_59": "distribution() converts the languages with dtype=str",
    # image/process.py
    "rakuten.image.process.x_write_jpeg__mutmut_9": "'.JPG': OpenCV reads the extension case-insensitively",
    "rakuten.image.process.x_write_jpeg__mutmut_11": "message of a branch OpenCV never takes (pragma: no cover)",
    "rakuten.image.process.x_clean_image__mutmut_41": "initial 'actions' value: always overwritten before return",
    "rakuten.image.process.x_clean_image__mutmut_69": "shape[1] of the image made square just before",
    "rakuten.image.process.x_clean_image__mutmut_150": "side >= size: at side == size the picture is not resized, "
    "so it is the content",
    # models/contract.py
    "rakuten.contracts.model_files.x_check_proba__mutmut_19": _BOUNDARY,
    "rakuten.contracts.model_files.x_check_proba__mutmut_31": _BOUNDARY,
    "rakuten.contracts.model_files.x_split_scores__mutmut_19": _INT_DTYPE + " (scored splits are always labelled)",
    # models/tfidf_svm.py
    "rakuten.models.tfidf_svm.x__above_median_down__mutmut_12": "n >= median: at n == median both give the median",
    "rakuten.models.tfidf_svm.x__texts__mutmut_3": _OBJ_DTYPE,
    "rakuten.models.tfidf_svm.x_predict_proba__mutmut_9": "np.zeros default dtype is float64",
    "rakuten.models.tfidf_svm.x_predict_proba__mutmut_11": "np.zeros default dtype is float64",
    "rakuten.models.tfidf_svm.x_top_terms__mutmut_48": "numpy reads sort kinds case-insensitively ('STABLE')",
    "rakuten.models.tfidf_svm.x_save__mutmut_15": "joblib compress=None writes the same bytes as compress=3",
    # data/split.py
    "rakuten.data.split.xǁSplitConfigǁvalidate__mutmut_6": _BOUNDARY,
    "rakuten.data.split.x_assign_splits__mutmut_93": _LAST_TRAIN,
    "rakuten.data.split.x_assign_splits__mutmut_94": _LAST_TRAIN,
    "rakuten.data.split.x_image_group_keys__mutmut_35": _INT_DTYPE + "; any dtype gives consistent keys",
    "rakuten.data.split.x_image_group_keys__mutmut_44": _INT_DTYPE + "; any dtype gives consistent keys",
    "rakuten.data.split.x_split_catalog__mutmut_2": _INDEX,
    "rakuten.data.split.x_split_catalog__mutmut_6": _INDEX,
    "rakuten.data.split.x_split_catalog__mutmut_46": _INT_DTYPE,
    "rakuten.data.split.x_split_catalog__mutmut_74": _INT_DTYPE + " (labelled rows have labels)",
    "rakuten.data.split.x_split_catalog__mutmut_99": _OBJ_CONCAT,
    "rakuten.data.split.x_split_catalog__mutmut_102": _OBJ_CONCAT,
    "rakuten.data.split.x_split_catalog__mutmut_118": "np.bincount of no groups is the empty array too",
    "rakuten.data.split.x_split_catalog__mutmut_121": "empty float array instead of int: its counts are 0 either way",
    "rakuten.data.split.x_split_catalog__mutmut_123": "empty float array instead of int: its counts are 0 either way",
    # data/catalog.py
    "rakuten.data.ingest.x_read_official_csv__mutmut_9": "codec names are case-insensitive ('UTF-8-SIG')",
    "rakuten.data.ingest.x_read_official_csv__mutmut_27": "re.split without maxsplit: [0] is still the first line",
    "rakuten.data.ingest.x_read_official_csv__mutmut_30": "re.split maxsplit=2: [0] is still the first line",
    "rakuten.data.ingest.x_read_official_csv__mutmut_58": "quoting=QUOTE_MINIMAL is pandas' default",
    "rakuten.data.ingest.x_read_official_csv__mutmut_91": "set_axis default axis is 0",
    "rakuten.data.ingest.x_read_official_csv__mutmut_117": _LOG_ONLY,
    "rakuten.data.ingest.x_read_official_csv__mutmut_118": _LOG_ONLY,
    "rakuten.data.ingest.x_exact_integers__mutmut_11": "str.extract default expand=True",
    "rakuten.data.ingest.x_exact_integers__mutmut_12": "str.extract(expand=False) with two groups still returns a "
    "DataFrame",
    "rakuten.data.ingest.x_exact_integers__mutmut_14": "notna() is boolean already",
    "rakuten.data.ingest.x_exact_integers__mutmut_35": "len > 20: any 20-digit value is above 2**63 - 1 and "
    "refused by the int comparison",
    "rakuten.data.ingest.x_exact_integers__mutmut_45": "notna() is boolean already",
    "rakuten.data.ingest.x__implicit_index__mutmut_9": "first row default None instead of []: falsy either way, "
    "first[0] is never reached",
    "rakuten.data.ingest.x_catalog_rows__mutmut_46": "np.arange of ints is int64 by default (Linux)",
    "rakuten.data.ingest.x_catalog_rows__mutmut_49": "np.arange of ints is int64 by default (Linux)",
    "rakuten.data.ingest.x_catalog_rows__mutmut_53": "the index is int64 already",
    "rakuten.data.ingest.x_catalog_rows__mutmut_65": "where() default fill NaN: the text column stores a missing "
    "value either way (pandas 3 str dtype)",
    "rakuten.data.ingest.x_load_catalog__mutmut_88": "is_official_test=True is the default of catalog_rows",
    # integrity.py
    "rakuten.core.integrity.x_listing_md5__mutmut_10": _CODEC,
    "rakuten.core.integrity.x_parse_lock__mutmut_6": "str.count start None is start 0",
    "rakuten.core.integrity.xǁArtifactRecordsǁfrom_lock__mutmut_11": _CODEC,
    "rakuten.core.integrity.xǁArtifactRecordsǁrecorded__mutmut_4": "`or True`: outs.get(None) is None (its keys are "
    "strings), as the else branch",
    "rakuten.core.integrity.xǁArtifactRecordsǁ_mismatch__mutmut_5": "`or True`: a hash without .dir, cut by 4 "
    "characters, names no cached listing (those are named by their 32-digit MD5), and a file never uses one",
    # preprocessing.py
    "rakuten.contracts.preprocessing.x_read_record__mutmut_7": _CODEC,
    "rakuten.contracts.preprocessing.x_changed_since_training__mutmut_4": _NONE_SECTION,
    "rakuten.contracts.preprocessing.x_changed_since_training__mutmut_6": _NONE_SECTION,
    "rakuten.contracts.preprocessing.x_check_runtime__mutmut_17": "the key named in the error of the record's own "
    "parse, which is discarded (only whether it fails counts)",
    "rakuten.contracts.preprocessing.x_with_runtime__mutmut_15": "_lookup(None, key) is _MISSING, as for a missing "
    "key of {}",
    "rakuten.contracts.preprocessing.x_with_runtime__mutmut_17": "_lookup(None, key) is _MISSING, as for a missing "
    "key of {}",
    # http_guards.py
    "rakuten.serving.http_guards.xǁGuardǁ__call____mutmut_34": "Content-Length default b'XXXX' instead of b'': not "
    "digits either, so no body",
    "rakuten.serving.http_guards.xǁGuardǁ__call____mutmut_51": "Transfer-Encoding default b'XXXX' instead of b'': "
    "holds no 'chunked' either",
    "rakuten.serving.http_guards.xǁGuardǁ__call____mutmut_84": "more_body default None instead of False: `not` of "
    "either is True",
    "rakuten.serving.http_guards.xǁGuardǁ__call____mutmut_86": "more_body default None instead of False: `not` of "
    "either is True",
    "rakuten.serving.http_guards.xǁGuardǁ__call____mutmut_130": "'CONNECTION': starlette's MutableHeaders lowercases "
    "the names it sets",
    "rakuten.serving.http_guards.xǁRateLimitFilterǁfilter__mutmut_5": "split without maxsplit: [0] is still the first "
    "line",
    "rakuten.serving.http_guards.xǁRateLimitFilterǁfilter__mutmut_9": "split maxsplit=2: [0] is still the first line",
    "rakuten.serving.http_guards.x__loop_exception__mutmut_11": "no message: str(None) holds no 'accept' either",
    "rakuten.serving.http_guards.x__loop_exception__mutmut_13": "no message: str(None) holds no 'accept' either",
    "rakuten.serving.http_guards.x__loop_exception__mutmut_16": "no message: 'XXXX' holds no 'accept' either",
    "rakuten.serving.http_guards.x_connection_budget__mutmut_6": "5 * burst: where 4 batches fit but 5 do not, the "
    "shrink keeps burst 2048 and the cap ((spare - cap) // 4 >= 2048)",
    "rakuten.serving.http_guards.x_connection_budget__mutmut_7": ">= at cap + 4 * burst == spare: the shrink gives "
    "burst 2048 and the cap unchanged",
    # config.py
    "rakuten.core.config.x__parse__mutmut_10": "help text of the stand-in Knob (None): help is never read while "
    "parsing",
    "rakuten.core.config.x__parse__mutmut_11": "help text of the stand-in Knob ('XXXX'): help is never read while "
    "parsing",
    "rakuten.core.config.x__parse__mutmut_26": "_number treats any kind but 'int' and 'float' as 'number' (None)",
    "rakuten.core.config.x__parse__mutmut_31": "_number treats any kind but 'int' and 'float' as 'number' "
    "('XXnumberXX')",
    "rakuten.core.config.x__parse__mutmut_32": "_number treats any kind but 'int' and 'float' as 'number' ('NUMBER')",
    "rakuten.core.config.x__parse__mutmut_82": "nonempty=None instead of False on the item knob: only read as a truth "
    "value",
    "rakuten.core.config.x__parse__mutmut_128": "nonempty=None instead of False on the value knob: only read as a "
    "truth value",
    "rakuten.core.config.xǁProfileViewǁ__getattr____mutmut_7": "no profile yet: __dict__.get(None) is None, as "
    "__dict__.get('')",
    "rakuten.core.config.xǁProfileViewǁ__getattr____mutmut_9": "no profile yet: __dict__.get(None) is None, as "
    "__dict__.get('')",
    "rakuten.core.config.xǁProfileViewǁ__getattr____mutmut_12": "no profile yet: no field is named 'XXXX', so None as "
    "for ''",
    # models/embed.py
    "rakuten.models.embed.x_load_frame__mutmut_24": "merge on=None: row_id is the only column both sides share (the "
    "images are cut to row_id, clean_path, readable)",
    "rakuten.models.embed.x_load_frame__mutmut_28": "merge without on: row_id is the only column both sides share "
    "(the images are cut to row_id, clean_path, readable)",
    "rakuten.models.embed.x_load_frame__mutmut_29": "merge how='inner' is pandas' default",
}


def module_name(rel: str) -> str:
    return "rakuten." + rel[:-3].replace("/", ".")


def _in_scope(key: str, functions: tuple[str, ...] | None) -> bool:
    """``key`` (``rakuten.core.io.x_check_run_paths__mutmut_3``, ``...xǁClassǁmethod__mutmut_3``) is a mutant of
    one of ``functions`` (None: of any)."""
    if functions is None:
        return True
    local = key.rsplit(".", 1)[-1]
    return any(local.startswith(f"x_{name}__mutmut_") for name in functions)


def previous_rows(path: Path) -> tuple[dict[str, dict], str | None]:
    """The module rows of the last report written to ``path`` (and its date), to keep unmeasured ones."""
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}, None
    rows = report.get("modules", {})
    renamed = {new: rows[old] for new, old in FORMERLY.items() if old in rows and new not in rows}
    return {**rows, **renamed}, report.get("date")


def collect(mutants: Path, previous: dict[str, dict], previous_date: str | None) -> dict[str, dict]:
    out = {}
    today = date.today().isoformat()
    for rel, functions in MODULES.items():
        name = module_name(rel)
        meta = mutants / "src" / "rakuten" / (rel + ".meta")
        codes = {}
        if meta.is_file():
            codes = {
                k: v for k, v in json.loads(meta.read_text())["exit_code_by_key"].items() if _in_scope(k, functions)
            }
        if not any(v is not None for v in codes.values()):  # never run here: keep the last measured row
            if name not in previous:
                raise SystemExit(
                    f"{name}: no mutmut results under {mutants} and no earlier row in the report; "
                    f'run `mutmut run "{name}*"` first (docs/mutation.md)'
                )
            row = dict(previous[name])
            row.setdefault("measured", previous_date)
            row["source"] = "previous report"
            row.update(not_run=0, stale_equivalents=[])  # its open survivors: as listed then, if at all
            out[name] = row
            continue
        survived = sorted(k for k, v in codes.items() if v in SURVIVED)
        equivalent = sorted(k for k in survived if k in EQUIVALENT)
        killed = sum(v in KILLED for v in codes.values())
        timeout = sum(v in TIMEOUT for v in codes.values())
        total = len(codes)
        other = total - killed - timeout - len(survived)
        effective = total - len(equivalent)
        listed = sorted(k for k in EQUIVALENT if k.startswith(name + ".") and _in_scope(k, functions))
        out[name] = {
            "total": total,
            "killed": killed,
            "survived": len(survived),
            "timeout": timeout,
            "equivalent": len(equivalent),
            "not_run": other,
            "score": round((killed + timeout) / effective, 4) if effective else 1.0,
            "raw_score": round((killed + timeout) / total, 4) if total else 1.0,
            "measured": today,
            "source": "mutants/",
            **({"functions": list(functions)} if functions else {}),
            "open_survivors": [k for k in survived if k not in EQUIVALENT],
            "stale_equivalents": [k for k in listed if codes.get(k) not in SURVIVED],
        }
    return out


ROW_KEYS = (
    "total",
    "killed",
    "survived",
    "timeout",
    "equivalent",
    "score",
    "measured",
    "source",
    "functions",
    "open_survivors",
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mutants", type=Path, default=REPO / "mutants")
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "bench" / "mutation.json")
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    previous, previous_date = previous_rows(args.out)
    figures = collect(args.mutants, previous, previous_date)
    print("| module | mutants | killed | timeout | survived | equivalent | score | measured |")
    print("|---|---|---|---|---|---|---|---|")
    for name, f in figures.items():
        scope = f" ({', '.join(f['functions'])})" if f.get("functions") else ""
        print(
            f"| {name}{scope} | {f['total']} | {f['killed']} | {f['timeout']} | {f['survived']} | "
            f"{f['equivalent']} | {100 * f['score']:.1f}% | {f['measured']} |"
        )
    report = {
        "date": date.today().isoformat(),
        "tool": "mutmut 3.8.1",
        "target_score": TARGET,
        "score": "(killed + timeout) / (total - equivalent)",
        "measured": "per module: the date its mutants were run; rows of modules not run since are kept "
        "from the previous report (source: previous report) and are of the code of that date",
        "modules": {k: {key: v[key] for key in ROW_KEYS if key in v} for k, v in figures.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    problems = [f"{k}: score {v['score']:.3f} < {TARGET}" for k, v in figures.items() if v["score"] < TARGET]
    problems += [f"{k}: {v['not_run']} mutants not run" for k, v in figures.items() if v["not_run"]]
    problems += [
        f"{k}: {name} is listed as equivalent but is no longer a survivor (remove it from EQUIVALENT)"
        for k, v in figures.items()
        for name in v["stale_equivalents"]
    ]
    for v in figures.values():
        for name in v.get("open_survivors", []):
            print(f"open survivor: {name}")
    if args.check and problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

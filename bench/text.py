"""Benchmark of the text side on a generated catalog of the real size (84,916 rows by default).

Measures rows/s of text_clean with and without spaCy (and the POS-aware ``rule`` lemmatizer on a
subset), the fit time of TF-IDF+LinearSVC and of fastText on an 80% train split, their weighted F1
on a 10% held-out part, and the peak RSS (this process + its worker processes). Prints a table and
writes ``reports/bench/text.json``. Targets on 2 cores: text_clean of 85k rows <= 2 min, TF-IDF+SVM
fit <= 2 min, peak RSS <= 4 GiB.

    python bench/text.py                 # full size, params.yaml settings
    python bench/text.py --rows 20000    # reduced size on a busy machine
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import time
from dataclasses import replace

import numpy as np
import pandas as pd
from measure import peak_rss_mib

from rakuten.contracts.classes import indices_to_codes
from rakuten.contracts.metrics import scores
from rakuten.core.config import from_params
from rakuten.core.io import write_json
from rakuten.core.logs import setup_logging
from rakuten.core.params import load_params
from rakuten.data.sample.config import SampleConfig
from rakuten.data.sample.tables import generate_tables
from rakuten.models import fasttext, tfidf_svm
from rakuten.text.normalise import Normaliser
from rakuten.text.text_clean import TextCleanConfig, clean_with_report, light_clean

log = logging.getLogger("bench.text")


def catalog_rows(n: int, seed: int) -> pd.DataFrame:
    """A generated catalog's text columns and labels (no images: only text is benchmarked)."""
    x, labels, *_ = generate_tables(SampleConfig(n_train=n, n_test=0, seed=seed, n_jobs=1))
    return pd.DataFrame(
        {
            "row_id": np.arange(n),
            "designation": x["designation"].to_numpy(dtype=object),
            "description": x["description"].to_numpy(dtype=object),
            "prdtypecode": pd.array(labels, dtype="Int64"),
        }
    )


def timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=84916)
    parser.add_argument("--rule-rows", type=int, default=3000, help="rows for the (slow) rule-lemmatizer timing")
    parser.add_argument("--fasttext-epoch", type=int, default=None, help="override fasttext.epoch")
    parser.add_argument("--out", default="reports/bench/text.json")
    args = parser.parse_args()
    setup_logging()
    params = load_params()
    cfg = from_params(TextCleanConfig, params, "text_clean")
    rows, gen_s = timed(catalog_rows, args.rows, 42)
    log.info("generated %d rows in %.1f s", len(rows), gen_s)
    results: dict = {
        "rows": args.rows,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
        "text_clean": {"n_jobs": cfg.n_jobs, "spacy_n_process": cfg.normalise.n_jobs},
    }

    designations = rows["designation"].tolist()
    descriptions = rows["description"].tolist()
    _, light_s = timed(light_clean, designations, descriptions, cfg)
    (frame, _), full_s = timed(clean_with_report, rows, cfg)
    results["text_clean"].update(
        {
            "without_spacy_seconds": round(light_s, 1),
            "without_spacy_rows_per_s": round(args.rows / light_s),
            "with_spacy_seconds": round(full_s, 1),
            "with_spacy_rows_per_s": round(args.rows / full_s),
            "lemmatizer": cfg.normalise.lemmatizer,
        }
    )
    if args.rule_rows:  # spaCy alone on a subset: the table lookup vs the POS-aware rule lemmatizer
        subset = frame["text_light"].head(args.rule_rows).tolist()
        for mode in ("lookup", "rule"):
            normaliser = Normaliser(replace(cfg.normalise, lemmatizer=mode))
            _, norm_s = timed(normaliser.normalise, subset)
            results["text_clean"][f"spacy_{mode}_rows_per_s"] = round(len(subset) / norm_s)
        results["text_clean"]["spacy_subset_rows"] = len(subset)

    data = rows[["row_id", "prdtypecode"]].merge(frame, on="row_id")
    rng = np.random.default_rng(0)
    part = rng.random(len(data))
    train, held = data[part < 0.8].reset_index(drop=True), data[part >= 0.9].reset_index(drop=True)
    y_held = held["prdtypecode"].to_numpy(dtype=np.int64)
    for name, module, config in (
        ("tfidf_svm", tfidf_svm, from_params(tfidf_svm.TfidfSvmConfig, params, "tfidf_svm")),
        ("fasttext", fasttext, from_params(fasttext.FastTextConfig, params, "fasttext")),
    ):
        if name == "fasttext" and args.fasttext_epoch:
            config = replace(config, epoch=args.fasttext_epoch)
        model, fit_s = timed(module.train, train, None, config)
        proba, pred_s = timed(module.predict_proba, model, held)
        f1 = scores(y_held, indices_to_codes(proba.argmax(axis=1)))["weighted_f1"]
        results[name] = {
            "train_rows": len(train),
            "fit_seconds": round(fit_s, 1),
            "predict_rows_per_s": round(len(held) / pred_s),
            "heldout_weighted_f1": f1,
        }
        if name == "fasttext":
            results[name]["epoch"] = config.epoch
        log.info("%s: fit %.1f s, held-out weighted F1 %.4f", name, fit_s, f1)
    results["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]  # a shared machine skews timings
    rss = peak_rss_mib()
    own, children = rss["self"], rss["children"]
    results["peak_rss_mib"] = {"main_process": own, "largest_child": children}
    results["targets"] = {
        "text_clean_85k_le_120s": bool(results["text_clean"]["with_spacy_seconds"] * 84916 / args.rows <= 120),
        "tfidf_svm_fit_le_120s": bool(results["tfidf_svm"]["fit_seconds"] <= 120),
        "peak_rss_le_4gib": bool(max(own, children) <= 4096),
    }
    write_json(results, args.out)
    table = [
        (
            "text_clean without spaCy",
            f"{results['text_clean']['without_spacy_seconds']} s",
            f"{results['text_clean']['without_spacy_rows_per_s']} rows/s",
        ),
        (
            "text_clean with spaCy (" + cfg.normalise.lemmatizer + ")",
            f"{results['text_clean']['with_spacy_seconds']} s",
            f"{results['text_clean']['with_spacy_rows_per_s']} rows/s",
        ),
        (
            "spaCy alone: lookup / rule lemmatizer",
            f"{results['text_clean'].get('spacy_lookup_rows_per_s', '-')} rows/s",
            f"{results['text_clean'].get('spacy_rule_rows_per_s', '-')} rows/s",
        ),
        (
            "TF-IDF + LinearSVC fit",
            f"{results['tfidf_svm']['fit_seconds']} s",
            f"F1 {results['tfidf_svm']['heldout_weighted_f1']}",
        ),
        (
            "fastText fit (epoch %d)" % results["fasttext"]["epoch"],
            f"{results['fasttext']['fit_seconds']} s",
            f"F1 {results['fasttext']['heldout_weighted_f1']}",
        ),
        ("peak RSS main / child", f"{own} MiB", f"{children} MiB"),
    ]
    width = max(len(r[0]) for r in table)
    sys.stdout.write(
        f"text benchmark, {args.rows} rows, {results['cpu_count']} CPUs, load average "
        f"{results['load_average_at_start'][0]} -> {results['load_average_at_end'][0]}\n"
    )
    for label, a, b in table:
        sys.stdout.write(f"  {label:<{width}}  {a:>14}  {b:>16}\n")


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""Train a random-forest churn classifier for Drover's exec trainer.

The script knows nothing of Drover beyond the exec trainer's environment
(see plugins/exectrain):

  DROVER_DATASET       the CSV data set, with a header row
  DROVER_OUTPUT_DIR    where model.pkl and model.json are written
  DROVER_TARGET        the column to predict (default "churn")
  DROVER_PARAMS        the run's parameters, a JSON object of strings
  DROVER_SCHEMA        the feature schema, as protojson (optional)
  DROVER_METRICS_FILE  where the hold-out metrics and the artifact are named

Parameters: n_estimators (200), max_depth (none), min_samples_leaf (5),
random_state (0), holdout (0.2, the stratified fraction kept out of
training), drop (customer_id: comma-separated columns that are not
features), n_jobs (-1, every CPU).

The artifact, model.pkl, is a pickled scikit-learn Pipeline that takes the
raw feature columns in the order model.json lists them ("features"): a 2-D
array (or DataFrame) of numbers and strings, missing values as None or NaN.
Its predict_proba columns are model.json's "classes". Categories never seen
in training encode as all zeros.

It needs only numpy and scikit-learn (Debian's python3-sklearn); pandas is
not required.
"""

import csv
import json
import math
import os
import pickle
import sys
import time

import numpy as np
import sklearn
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    log_loss,
    precision_score,
    recall_score,
    roc_auc_score,
)
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder

FORMAT = "sklearn-pickle"


def progress(fraction, stage):
    """Report progress to the exec trainer."""
    print(f"drover:progress {fraction:.3f} {stage}", flush=True)


def metric(name, value):
    """Report a metric to the exec trainer as it becomes known."""
    print(f"drover:metric {name} {float(value)!r}", flush=True)


def log(msg):
    print(msg, flush=True)


def fail(msg):
    print(f"train.py: {msg}", file=sys.stderr, flush=True)
    sys.exit(2)


class Params:
    """The run's parameters, from DROVER_PARAMS, with their defaults."""

    def __init__(self, raw):
        self.raw = raw

    def _get(self, name, default, convert):
        value = self.raw.get(name, "").strip()
        if value == "":
            return default
        try:
            return convert(value)
        except ValueError:
            fail(f"param {name}: {value!r} is not a valid {convert.__name__}")

    def int(self, name, default):
        return self._get(name, default, int)

    def float(self, name, default):
        return self._get(name, default, float)

    def optional_int(self, name):
        if self.raw.get(name, "").strip().lower() in ("", "none", "null"):
            return None
        return self.int(name, None)

    def list(self, name, default):
        value = self.raw.get(name)
        if value is None:
            return default
        return [v.strip() for v in value.split(",") if v.strip()]


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        try:
            header = next(reader)
        except StopIteration:
            fail(f"{path}: empty data set")
        rows = [r for r in reader if r]
    for i, r in enumerate(rows):
        if len(r) != len(header):
            fail(f"{path} line {i + 2}: {len(r)} fields, the header has {len(header)}")
    return header, rows


def parse_number(v):
    """A float, NaN for an empty value, or None when v is not a number."""
    if v == "":
        return math.nan
    try:
        return float(v)
    except ValueError:
        return None


def feature_kinds(header, rows, target, drop, schema):
    """The feature columns and which of them are categorical.

    The schema's inputs, when given, name the features and their kinds;
    otherwise every column but the target and the dropped ones is a
    feature, numeric when every non-empty value is a number.
    """
    inputs = (schema or {}).get("inputs") or []
    if inputs:
        features, categorical = [], set()
        for f in inputs:
            name = f.get("name", "")
            if name not in header:
                fail(f"schema input {name!r} is not a column of the data set")
            features.append(name)
            kind = f.get("kind", "")
            if kind == "FEATURE_KIND_CATEGORICAL" or (f.get("datatype") == "BYTES" and kind != "FEATURE_KIND_NUMERIC"):
                categorical.add(name)
        return features, categorical
    features = [h for h in header if h != target and h not in drop]
    categorical = set()
    for name in features:
        j = header.index(name)
        if any(parse_number(r[j]) is None for r in rows):
            categorical.add(name)
    return features, categorical


def matrix(header, rows, features, categorical):
    """The raw feature matrix: an object array of floats and strings."""
    X = np.empty((len(rows), len(features)), dtype=object)
    for k, name in enumerate(features):
        j = header.index(name)
        if name in categorical:
            X[:, k] = [r[j] if r[j] != "" else math.nan for r in rows]
        else:
            col = [parse_number(r[j]) for r in rows]
            bad = next((i for i, v in enumerate(col) if v is None), None)
            if bad is not None:
                fail(f"line {bad + 2}, column {name}: {rows[bad][j]!r} is not a number")
            X[:, k] = col
    return X


def classification_metrics(y, proba, classes):
    pred = classes[np.argmax(proba, axis=1)]
    out = {"accuracy": accuracy_score(y, pred), "holdout_rows": float(len(y))}
    if len(classes) == 2:
        pos = classes[1]  # the second class in sorted order, as Drover's native runner
        avg = dict(average="binary", pos_label=pos)
        out["roc_auc"] = roc_auc_score(y == pos, proba[:, 1]) if len(set(y)) == 2 else math.nan
    else:
        avg = dict(average="macro")
        try:
            out["roc_auc"] = roc_auc_score(y, proba, multi_class="ovr", average="macro", labels=classes)
        except ValueError:
            out["roc_auc"] = math.nan
    out["precision"] = precision_score(y, pred, zero_division=0, **avg)
    out["recall"] = recall_score(y, pred, zero_division=0, **avg)
    out["f1"] = f1_score(y, pred, zero_division=0, **avg)
    out["log_loss"] = log_loss(y, proba, labels=classes)
    return {k: float(v) for k, v in out.items()}


def write_json(path, value):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2, sort_keys=True, allow_nan=False)
        f.write("\n")
    os.replace(tmp, path)


def main():
    started = time.monotonic()
    dataset = os.environ.get("DROVER_DATASET") or fail("DROVER_DATASET is not set")
    out_dir = os.environ.get("DROVER_OUTPUT_DIR") or fail("DROVER_OUTPUT_DIR is not set")
    metrics_file = os.environ.get("DROVER_METRICS_FILE") or os.path.join(out_dir, "metrics.json")
    target = os.environ.get("DROVER_TARGET") or "churn"
    params = Params(json.loads(os.environ.get("DROVER_PARAMS") or "{}"))
    schema = json.loads(os.environ["DROVER_SCHEMA"]) if os.environ.get("DROVER_SCHEMA") else None

    n_estimators = params.int("n_estimators", 200)
    max_depth = params.optional_int("max_depth")
    min_samples_leaf = params.int("min_samples_leaf", 5)
    random_state = params.int("random_state", 0)
    holdout = params.float("holdout", 0.2)
    drop = set(params.list("drop", ["customer_id"]))
    n_jobs = params.int("n_jobs", -1)
    if n_estimators < 1:
        fail("param n_estimators must be at least 1")
    if not 0 < holdout < 1:
        fail("param holdout must be between 0 and 1")

    log(f"scikit-learn {sklearn.__version__}, numpy {np.__version__}, python {sys.version.split()[0]}")
    progress(0.0, "reading")
    header, rows = read_csv(dataset)
    if target not in header:
        fail(f"{dataset}: no target column {target!r} (columns: {', '.join(header)})")
    features, categorical = feature_kinds(header, rows, target, drop, schema)
    if not features:
        fail("no feature columns")
    X = matrix(header, rows, features, categorical)
    y = np.array([r[header.index(target)] for r in rows], dtype=object)
    classes = np.unique(y)
    if len(classes) < 2:
        fail(f"target {target!r} has a single class")
    log(f"{len(rows)} rows, {len(features)} features ({len(categorical)} categorical), "
        f"classes {', '.join(map(str, classes))}")

    progress(0.1, "splitting")
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=holdout, stratify=y, random_state=random_state)
    log(f"{len(y_train)} training rows, {len(y_test)} hold-out rows")

    numeric_idx = [k for k, f in enumerate(features) if f not in categorical]
    categorical_idx = [k for k, f in enumerate(features) if f in categorical]
    transformers = []
    if numeric_idx:
        transformers.append(("numeric", SimpleImputer(strategy="median"), numeric_idx))
    if categorical_idx:
        transformers.append(("categorical", make_pipeline(
            SimpleImputer(strategy="constant", fill_value="(missing)"),
            OneHotEncoder(handle_unknown="ignore")), categorical_idx))
    encode = ColumnTransformer(transformers)
    Z_train = encode.fit_transform(X_train)

    # Grow the forest a tenth at a time (warm_start), reporting progress;
    # the result is the same forest as one fit with n_estimators trees.
    forest = RandomForestClassifier(
        n_estimators=0, max_depth=max_depth, min_samples_leaf=min_samples_leaf,
        random_state=random_state, n_jobs=n_jobs, warm_start=True)
    steps = min(10, n_estimators)
    for i in range(1, steps + 1):
        forest.n_estimators = n_estimators * i // steps
        forest.fit(Z_train, y_train)
        progress(0.15 + 0.7 * i / steps, f"training {forest.n_estimators}/{n_estimators} trees")
    model = Pipeline([("encode", encode), ("forest", forest)])

    progress(0.9, "evaluating")
    metrics = classification_metrics(y_test, model.predict_proba(X_test), model.classes_)
    for name in sorted(metrics):
        metric(name, metrics[name])

    progress(0.95, "writing")
    with open(os.path.join(out_dir, "model.pkl"), "wb") as f:
        pickle.dump(model, f, protocol=pickle.HIGHEST_PROTOCOL)
    write_json(os.path.join(out_dir, "model.json"), {
        "format": FORMAT,
        "target": target,
        "features": features,
        "categorical": [f for f in features if f in categorical],
        "classes": [str(c) for c in model.classes_],
        "params": {"n_estimators": n_estimators, "max_depth": max_depth,
                   "min_samples_leaf": min_samples_leaf, "random_state": random_state,
                   "holdout": holdout},
        "sklearn_version": sklearn.__version__,
        "numpy_version": np.__version__,
    })
    # The metrics file comes last: the exec trainer reads it once the
    # script has exited 0. An undefined metric (NaN) is written as null.
    write_json(metrics_file, {
        "metrics": {k: (v if math.isfinite(v) else None) for k, v in metrics.items()},
        "artifact": "model.pkl",
        "format": FORMAT,
    })
    log(f"done in {time.monotonic() - started:.1f}s: accuracy {metrics['accuracy']:.4f}, "
        f"roc_auc {metrics['roc_auc']:.4f}")


if __name__ == "__main__":
    main()

# Writes churn_golden.json: what scikit-learn reaches on Drover's bundled
# customer-churn split (internal/churn/testdata), encoded as the native
# runner encodes it: numeric columns standardised over the training rows
# (population standard deviation), the others one-hot over the categories
# seen in training, sorted; customer_id ignored. The logistic regression is
# the native runner's model (C=1, the intercept unpenalised); the random
# forest is there for context.
# /usr/bin/python3 churn_golden.py > churn_golden.json   (Debian: python3-sklearn)
import csv
import json
import os

import numpy as np
import sklearn
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "internal", "churn", "testdata")


def load(name):
    with open(os.path.join(DATA, name), newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def is_number(s):
    try:
        return np.isfinite(float(s))
    except ValueError:
        return False


header, train = load("churn_train.csv")
test_header, test = load("churn_test.csv")
assert header == test_header
target = header.index("churn")
features = [j for j, name in enumerate(header) if name not in ("customer_id", "churn")]
numeric = [j for j in features if all(is_number(r[j]) for r in train)]
categorical = [j for j in features if j not in numeric]

num_train = np.array([[float(r[j]) for j in numeric] for r in train])
mean, std = num_train.mean(0), num_train.std(0)
categories = {j: sorted({r[j] for r in train}) for j in categorical}


def encode(rows):
    # The native runner's order: features as in the header, each numeric
    # one a column, each categorical one a block of one-hot columns.
    cols = []
    for j in features:
        if j in categories:
            cols += [[1.0 if r[j] == c else 0.0 for r in rows] for c in categories[j]]
        else:
            k = numeric.index(j)
            cols.append([(float(r[j]) - mean[k]) / std[k] for r in rows])
    return np.array(cols).T


X_train, X_test = encode(train), encode(test)
y_train = np.array([r[target] == "yes" for r in train], dtype=int)
y_test = np.array([r[target] == "yes" for r in test], dtype=int)

logistic = LogisticRegression(C=1.0, tol=1e-10, max_iter=10000).fit(X_train, y_train)
p_logistic = logistic.predict_proba(X_test)
forest = RandomForestClassifier(n_estimators=200, random_state=0).fit(X_train, y_train)
p_forest = forest.predict_proba(X_test)

out = dict(
    sklearn_version=sklearn.__version__,
    train_rows=len(train),
    test_rows=len(test),
    test_churn_rate=float(y_test.mean()),
    logistic=dict(
        accuracy=accuracy_score(y_test, logistic.predict(X_test)),
        roc_auc=roc_auc_score(y_test, p_logistic[:, 1]),
        log_loss=log_loss(y_test, p_logistic),
    ),
    random_forest=dict(
        accuracy=accuracy_score(y_test, forest.predict(X_test)),
        roc_auc=roc_auc_score(y_test, p_forest[:, 1]),
    ),
)
print(json.dumps(out, indent=1))

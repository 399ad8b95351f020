# Writes linear_golden.json: small data sets and the coefficients that
# scikit-learn fits to them on standardised features (population standard
# deviation, as the native runner uses), with its default penalties.
# /usr/bin/python3 linear_golden.py > linear_golden.json   (Debian: python3-sklearn)
import json
import numpy as np
from sklearn.linear_model import LogisticRegression, Ridge

rng = np.random.default_rng(11)
n = 300
num = rng.normal(size=(n, 3)) * [1.0, 5.0, 0.2] + [0.0, 10.0, -1.0]
cat = rng.choice(["a", "b", "c"], size=n)
onehot = np.stack([(cat == c).astype(float) for c in ["a", "b", "c"]], axis=1)
std = (num - num.mean(0)) / num.std(0)
X = np.hstack([std, onehot])
z = X @ [1.5, -2.0, 0.5, 0.8, -0.3, 0.0] + rng.normal(scale=0.5, size=n)
yb = (z > 0).astype(int)
ym = np.digitize(z, [-1.0, 1.0])  # three classes
yr = 3.0 * std[:, 0] - 1.0 * std[:, 1] + onehot @ [0.5, 0.0, -0.5] + rng.normal(scale=0.1, size=n)

def fit(model, y):
    model.fit(X, y)
    return dict(coef=np.atleast_2d(model.coef_).tolist(), intercept=np.atleast_1d(model.intercept_).tolist())

out = dict(
    numeric=num.tolist(), category=cat.tolist(),
    binary=[str(v) for v in yb], multi=["c%d" % v for v in ym], regression=yr.tolist(),
    binary_fit=fit(LogisticRegression(C=1.0, tol=1e-10, max_iter=10000), yb),
    multi_fit=fit(LogisticRegression(C=1.0, tol=1e-10, max_iter=10000), ym),
    regression_fit=fit(Ridge(alpha=1.0), yr),
)
print(json.dumps(out))

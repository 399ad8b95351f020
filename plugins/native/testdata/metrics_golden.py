# Writes metrics_golden.json: scikit-learn's metrics on fixed random data.
# /usr/bin/python3 metrics_golden.py > metrics_golden.json   (Debian: python3-sklearn)
import numpy as np, json
from sklearn import metrics
rng = np.random.default_rng(7)
out = {}
# binary
y = rng.integers(0, 2, 40); s = np.round(rng.random(40), 2)  # ties
p = (s > 0.5).astype(int)
out['binary'] = dict(y=y.tolist(), s=s.tolist(), p=p.tolist(),
  acc=metrics.accuracy_score(y,p), prec=metrics.precision_score(y,p), rec=metrics.recall_score(y,p), f1=metrics.f1_score(y,p),
  auc=metrics.roc_auc_score(y,s), ll=metrics.log_loss(y, np.c_[1-s, s]))
# multiclass
y = rng.integers(0, 3, 50); raw = rng.random((50,3)); pr = raw/raw.sum(1, keepdims=True); p = pr.argmax(1)
out['multi'] = dict(y=y.tolist(), proba=pr.tolist(), p=p.tolist(),
  acc=metrics.accuracy_score(y,p), prec=metrics.precision_score(y,p,average='macro',zero_division=0), rec=metrics.recall_score(y,p,average='macro',zero_division=0),
  f1=metrics.f1_score(y,p,average='macro',zero_division=0), auc=metrics.roc_auc_score(y,pr,multi_class='ovr',average='macro'), ll=metrics.log_loss(y,pr))
# regression
y = rng.normal(size=30); q = y + rng.normal(scale=0.3, size=30)
out['reg'] = dict(y=y.tolist(), p=q.tolist(), mae=metrics.mean_absolute_error(y,q), rmse=metrics.mean_squared_error(y,q)**0.5, r2=metrics.r2_score(y,q))
print(json.dumps(out))

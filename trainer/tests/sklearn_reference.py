"""Trains scikit-learn's counterpart of a trainer job on the same split and prints its test
accuracy as JSON. Usage: sklearn_reference.py SPEC DATA SPLIT_JSON"""
import csv
import json
import sys

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier

spec = json.load(open(sys.argv[1]))
split = json.load(open(sys.argv[3]))
target = spec["schema"]["target"]
with open(sys.argv[2], newline="") as f:
    rows = list(csv.DictReader(f))
features = [c["name"] for c in spec["schema"]["columns"] if c["name"] != target]
for c in spec["schema"]["columns"]:
    if c["name"] != target and c["type"] != "numeric":
        sys.exit("the reference handles numeric features only")
x = np.array([[float(r[c]) for c in features] for r in rows])
y = np.array([r[target] for r in rows])
train, test = split["train"], split["test"]
model = spec["model"]
if model["algorithm"] == "logistic_regression":
    scaler = StandardScaler().fit(x[train])
    # Our l2 penalises mean(loss) + l2/2 |w|^2; scikit-learn's C weighs sum(loss) against |w|^2/2.
    c = 1.0 / (model.get("l2", 0.0) * len(train)) if model.get("l2", 0.0) > 0 else 1e12
    clf = LogisticRegression(C=c, max_iter=10000).fit(scaler.transform(x[train]), y[train])
    accuracy = clf.score(scaler.transform(x[test]), y[test])
elif model["algorithm"] == "decision_tree":
    clf = DecisionTreeClassifier(
        criterion=model.get("criterion", "gini"),
        max_depth=model.get("max_depth", 8),
        min_samples_split=model.get("min_samples_split", 2),
        min_samples_leaf=model.get("min_samples_leaf", 1),
        random_state=0,
    ).fit(x[train].astype(np.float32), y[train])
    accuracy = clf.score(x[test].astype(np.float32), y[test])
else:
    sys.exit("no reference for " + model["algorithm"])
print(json.dumps({"accuracy": accuracy, "test_rows": len(test)}))

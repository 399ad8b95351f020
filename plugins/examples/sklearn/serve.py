#!/usr/bin/python3
"""Serve a scikit-learn classifier with the Open Inference Protocol.

A model server for Drover's process server (plugins/procserve), in
Python's standard library plus numpy and scikit-learn. It loads the
Pipeline that train.py writes and answers the protocol's HTTP/JSON
endpoints on 127.0.0.1:

  GET  /v2/health/live, /v2/health/ready
  GET  /v2                                  server metadata
  GET  /v2/models/{name}                    model metadata
  GET  /v2/models/{name}/ready
  POST /v2/models/{name}/infer

An inference request has one input per feature, named as the feature,
shaped [rows] or [rows, 1]: BYTES for a categorical feature, a numeric
datatype for the others; null is a missing value. The answer has `label`
(BYTES, [rows]), the most probable class, and `probabilities` (FP64,
[rows, classes], in the order of the model metadata's classes parameter).
Errors are {"error": "..."}: 400 for a request the model cannot take, 404
for another model or path, 500 when the model fails.

Arguments (each defaults to the process server's variable):

  --port      the port (DROVER_PORT)
  --artifact  model.pkl, or a directory holding it (DROVER_ARTIFACT)
  --name      the model's name in URLs (DROVER_MODEL_NAME, else "model")
  --features  the feature columns in order, comma-separated, for a
              model.pkl with no model.json beside it and no DROVER_SCHEMA

The pickle is a Pipeline whose predict_proba takes a 2-D object array of
the raw feature columns. Their names and order come from model.json beside
model.pkl ("features", a list of names or of {"name", "type": "numeric" |
"categorical"} objects, and "categorical", a list of names), else from the
inputs of the feature schema in DROVER_SCHEMA, else from --features.
Unpickling runs code: serve only artifacts you trust (Drover's are
verified by digest before they reach the agent's disk).

With Drover's agent (a process-server command):

  /usr/bin/python3 serve.py --port={port} --artifact={artifact} --name={name}
"""

import argparse
import json
import os
import pickle
import signal
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

MAX_BODY = 64 << 20
NUMERIC = {"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16",
           "INT32", "INT64", "FP16", "FP32", "FP64"}


def log(msg):
    print(f"serve.py: {msg}", file=sys.stderr, flush=True)


class RequestError(Exception):
    """A request the model cannot take: HTTP 400."""


class Model:
    """The loaded Pipeline and the features it takes."""

    def __init__(self, name, pipeline, features, categorical):
        self.name = name
        self.pipeline = pipeline
        self.features = features
        self.categorical = set(categorical)
        self.classes = [str(c) for c in pipeline.classes_]

    def metadata(self):
        return {
            "name": self.name,
            "versions": [],
            "platform": "sklearn",
            "inputs": [{"name": f, "datatype": "BYTES" if f in self.categorical else "FP64",
                        "shape": [-1]} for f in self.features],
            "outputs": [
                {"name": "label", "datatype": "BYTES", "shape": [-1]},
                {"name": "probabilities", "datatype": "FP64", "shape": [-1, len(self.classes)]},
            ],
            "parameters": {"classes": ",".join(self.classes)},
        }

    def infer(self, request):
        if not isinstance(request, dict):
            raise RequestError("want a JSON object")
        inputs = request.get("inputs")
        if not isinstance(inputs, list) or not inputs:
            raise RequestError("inputs: want a non-empty array")
        columns, rows = {}, None
        for i, t in enumerate(inputs):
            name, values = self._column(i, t)
            if name in columns:
                raise RequestError(f"inputs[{i}].name: {name!r} appears twice")
            if rows is not None and len(values) != rows:
                raise RequestError(f"inputs[{i}]: {len(values)} rows, inputs[0] has {rows}")
            rows = len(values)
            columns[name] = values
        missing = [f for f in self.features if f not in columns]
        if missing:
            raise RequestError(f"inputs: no input for feature {', '.join(missing)}")
        unknown = [n for n in columns if n not in self.features]
        if unknown:
            raise RequestError(f"inputs: {', '.join(unknown)} is not a feature of {self.name} "
                               f"(features: {', '.join(self.features)})")

        X = np.empty((rows, len(self.features)), dtype=object)
        for k, f in enumerate(self.features):
            X[:, k] = columns[f]
        proba = np.asarray(self.pipeline.predict_proba(X), dtype=np.float64)
        labels = [self.classes[j] for j in np.argmax(proba, axis=1)]
        outputs = [
            {"name": "label", "datatype": "BYTES", "shape": [rows], "data": labels},
            {"name": "probabilities", "datatype": "FP64", "shape": [rows, len(self.classes)],
             "data": proba.ravel().tolist()},
        ]
        wanted = request.get("outputs")
        if isinstance(wanted, list) and wanted:
            names = {o.get("name") for o in wanted if isinstance(o, dict)}
            outputs = [o for o in outputs if o["name"] in names]
        answer = {"model_name": self.name, "outputs": outputs}
        if isinstance(request.get("id"), str):
            answer["id"] = request["id"]
        return answer

    def _column(self, i, t):
        """One input tensor as a column of raw values, one per row."""
        where = f"inputs[{i}]"
        if not isinstance(t, dict):
            raise RequestError(f"{where}: want an object")
        name, datatype, shape = t.get("name"), t.get("datatype"), t.get("shape")
        if not isinstance(name, str) or not name:
            raise RequestError(f"{where}.name: want a non-empty string")
        if datatype != "BYTES" and datatype not in NUMERIC:
            raise RequestError(f"{where}.datatype: {datatype!r} is not one of the protocol's datatypes")
        if (not isinstance(shape, list) or len(shape) not in (1, 2)
                or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
                or len(shape) == 2 and shape[1] != 1):
            raise RequestError(f"{where}.shape: want [rows] or [rows, 1], not {shape!r}")
        data = flatten(t.get("data"))
        if data is None:
            raise RequestError(f"{where}.data: want an array")
        if len(data) != shape[0]:
            raise RequestError(f"{where}.data: {len(data)} elements for shape {shape}")
        categorical = name in self.categorical
        column = []
        for j, v in enumerate(data):
            if v is None:
                column.append(np.nan)
            elif datatype == "BYTES":
                if not isinstance(v, str):
                    raise RequestError(f"{where}.data: element {j}: want a string for BYTES")
                if not categorical:
                    try:
                        v = float(v)
                    except ValueError:
                        raise RequestError(f"{where}.data: element {j}: {v!r} is not a number "
                                           f"and {name} is numeric") from None
                column.append(v)
            elif isinstance(v, (int, float)):
                # A category sent as a number is the string the training
                # data held: 2, not 2.0.
                if categorical:
                    v = str(int(v)) if float(v).is_integer() else str(v)
                column.append(float(v) if not categorical else v)
            else:
                raise RequestError(f"{where}.data: element {j}: want a number for {datatype}")
        return name, column


def flatten(data):
    """The elements of nested lists in row-major order; None for a non-list."""
    if not isinstance(data, list):
        return None
    out = []
    stack = [iter(data)]
    while stack:
        for v in stack[-1]:
            if isinstance(v, list):
                stack.append(iter(v))
                break
            out.append(v)
        else:
            stack.pop()
    return out


def features_of(pkl_path, explicit):
    """The feature names in order and the categorical ones."""
    meta_path = os.path.join(os.path.dirname(pkl_path), "model.json")
    if os.path.exists(meta_path):
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
        features, categorical = [], set(meta.get("categorical") or [])
        for f in meta.get("features") or []:
            if isinstance(f, dict):
                features.append(f["name"])
                if f.get("type") == "categorical":
                    categorical.add(f["name"])
            else:
                features.append(str(f))
        if features:
            return features, categorical, meta_path
    schema = os.environ.get("DROVER_SCHEMA")
    if schema:
        inputs = json.loads(schema).get("inputs") or []
        if inputs:
            features = [f["name"] for f in inputs]
            categorical = {f["name"] for f in inputs
                           if f.get("kind") == "FEATURE_KIND_CATEGORICAL"
                           or (f.get("datatype") == "BYTES" and f.get("kind") != "FEATURE_KIND_NUMERIC")}
            return features, categorical, "DROVER_SCHEMA"
    if explicit:
        return [f.strip() for f in explicit.split(",") if f.strip()], set(), "--features"
    raise SystemExit(f"serve.py: the feature columns are unknown: no {meta_path}, no DROVER_SCHEMA, no --features")


def load(artifact, name, explicit_features):
    path = os.path.join(artifact, "model.pkl") if os.path.isdir(artifact) else artifact
    with open(path, "rb") as f:
        pipeline = pickle.load(f)
    if not hasattr(pipeline, "predict_proba") or not hasattr(pipeline, "classes_"):
        raise SystemExit(f"serve.py: {path} does not hold a fitted classifier")
    features, categorical, source = features_of(path, explicit_features)
    categorical = [f for f in features if f in categorical]
    log(f"loaded {path}: features {', '.join(features)} (from {source}; categorical: "
        f"{', '.join(categorical) or 'none'}), classes {', '.join(map(str, pipeline.classes_))}")
    return Model(name, pipeline, features, categorical)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: every answer has a Content-Length
    server_version = "drover-sklearn-serve/1"
    model = None  # set by main
    access_log = False

    def do_GET(self):
        path = self.path.split("?", 1)[0].rstrip("/")
        m = self.model
        if path == "/v2/health/live":
            self.reply(200, {"live": True})
        elif path == "/v2/health/ready":
            self.reply(200, {"ready": True})
        elif path == "/v2":
            self.reply(200, {"name": "drover-sklearn-serve", "version": "1", "extensions": []})
        elif path == f"/v2/models/{m.name}":
            self.reply(200, m.metadata())
        elif path == f"/v2/models/{m.name}/ready":
            self.reply(200, {"name": m.name, "ready": True})
        elif path == f"/v2/models/{m.name}/infer":
            self.reply(405, {"error": "use POST"})
        elif path.startswith("/v2/models/"):
            self.reply(404, {"error": f"unknown model or endpoint {path} (this server serves {m.name})"})
        else:
            self.reply(404, {"error": f"unknown endpoint {path}"})

    def do_POST(self):
        path = self.path.split("?", 1)[0].rstrip("/")
        if path != f"/v2/models/{self.model.name}/infer":
            self.discard_body()
            self.reply(404, {"error": f"unknown model or endpoint {path} (this server serves {self.model.name})"})
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self.reply(411, {"error": "a request needs a Content-Length"}, close=True)
            return
        if length > MAX_BODY:
            self.reply(413, {"error": f"the body is over {MAX_BODY >> 20} MiB"}, close=True)
            return
        body = self.rfile.read(length)
        try:
            request = json.loads(body)
        except ValueError as e:
            self.reply(400, {"error": f"malformed JSON: {e}"})
            return
        try:
            answer = self.model.infer(request)
        except RequestError as e:
            self.reply(400, {"error": str(e)})
            return
        except Exception as e:  # the model failed: say so, keep serving
            log(f"inference failed: {type(e).__name__}: {e}")
            self.reply(500, {"error": f"the model failed: {type(e).__name__}: {e}"})
            return
        self.reply(200, answer)

    def do_PUT(self):
        self.discard_body()
        self.reply(405, {"error": "method not allowed"})

    do_DELETE = do_PATCH = do_PUT

    def discard_body(self):
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = 0
        if 0 < length <= MAX_BODY:
            self.rfile.read(length)
        elif length:
            self.close_connection = True

    def reply(self, status, value, close=False):
        try:
            body = json.dumps(value, allow_nan=False, separators=(",", ":")).encode()
        except ValueError as e:
            status, body = 500, json.dumps({"error": f"the answer cannot be JSON: {e}"}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        if self.access_log:
            log(f"{self.address_string()} {fmt % args}")

    def log_error(self, fmt, *args):
        log(fmt % args)


def main():
    p = argparse.ArgumentParser(description="Serve a scikit-learn classifier with the Open Inference Protocol.")
    p.add_argument("--port", type=int, default=int(os.environ.get("DROVER_PORT") or 0))
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--artifact", default=os.environ.get("DROVER_ARTIFACT"))
    p.add_argument("--name", default=os.environ.get("DROVER_MODEL_NAME") or "model")
    p.add_argument("--features", help="the feature columns in order, comma-separated")
    p.add_argument("--access-log", action="store_true", help="log every request")
    args = p.parse_args()
    if not args.artifact:
        p.error("--artifact (or DROVER_ARTIFACT) is required")
    if not args.port:
        p.error("--port (or DROVER_PORT) is required")

    Handler.model = load(args.artifact, args.name, args.features)
    Handler.access_log = args.access_log
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True

    def stop(signum, _frame):
        log(f"signal {signum}: stopping")
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log(f"serving model {args.name} on http://{args.host}:{server.server_address[1]}")
    server.serve_forever()
    server.server_close()


if __name__ == "__main__":
    main()

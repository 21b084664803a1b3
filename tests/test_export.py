"""SavedModel export for TF Serving (issue 4), end to end: train a tiny run on glyphs, export it with
scripts/export.py, reload it in a fresh process where `fden_tf` cannot be imported, and call every signature:
outputs against the in-process model, the warmup file, docs/serving.md's REST and gRPC snippets run verbatim
(the network replaced by the loaded signatures: TF Serving itself cannot run here), bad input,
`saved_model_cli`, versioning and atomicity.

The functions under "the child process" run in that fresh process (`python -c`, importing this module), so
this module imports neither `fden_tf` nor anything else of the package at its top.
"""

import io
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.dirname(os.path.abspath(__file__))
SERVING_DOC = os.path.join(ROOT, "docs", "serving.md")  # the serving page; its snippets are run here
SIGNATURES = ("serving_default", "encode", "disentangle", "entangle", "decode", "translate",
              "fewshot_classify", "fewshot_evaluate")
MODEL = "glyphs"  # the model name the serving page's snippets use
SERVING_TITLE = "# Serving (TF Serving)"

pytestmark = pytest.mark.serving


def _env():
  return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="-1")


# ---------------------------------------------------------------------------------------------------------
# Inputs: the same arrays for the exported signatures (child) and the in-process model (parent).


def equality_inputs(image_shape, dim):
  """signature -> inputs (numpy, the signature's dtypes) for the output-equality check."""
  rng = np.random.default_rng(1)
  images = lambda n: rng.random((n, *image_shape), dtype=np.float32)
  codes = lambda n: rng.standard_normal((n, dim)).astype(np.float32)
  support = {"support_images": images(6), "support_labels": np.array([42, 7, 42, 7, 1000, 7], np.int64),
             "query_images": images(4)}
  return {
      "encode": {"images": images(5)},
      "disentangle": {"z": codes(5)},
      "entangle": {"f_ide": codes(5), "f_sty": codes(5)},
      "decode": {"z": codes(5)},
      "translate": {"image_a": images(4), "image_b": images(4),
                    "identity_weight": np.array([1.0, 0.0, 0.5, 0.25], np.float32),
                    "style_weight": np.array([0.0, 1.0, 0.5, 0.75], np.float32)},
      "fewshot_classify": support,
      "fewshot_evaluate": dict(support, query_labels=np.array([7, 42, 1000, 7], np.int64)),
  }


def _bad(signature, **changes):
  """A bad request: a valid input set for `signature` with some inputs replaced (functions of shape, dim)."""
  def build(image_shape, dim):
    inputs = dict(equality_inputs(image_shape, dim)[signature])
    inputs.update({k: v(image_shape, dim) if callable(v) else v for k, v in changes.items()})
    return inputs
  return signature, build


def _images(*shape, dtype=np.float32, value=0.5):
  return np.full(shape, value, dtype)


# case -> (signature, inputs builder, what the error message must say)
BAD_INPUTS = {
    "wrong_rank": (*_bad("encode", images=_images(2, 32, 32)),
                   "encode: images must be a batch of 32x32x1 images, shape [batch, 32, 32, 1]; got shape] "
                   "[2 32 32]"),
    "wrong_image_size": (*_bad("encode", images=_images(2, 28, 28, 1)), "got shape] [2 28 28 1]"),
    "wrong_channel_count": (*_bad("encode", images=_images(2, 32, 32, 3)), "got shape] [2 32 32 3]"),
    "pixels_not_in_0_1": (*_bad("encode", images=_images(2, 32, 32, 1, value=255.0)),
                          "pixel values must lie in [0, 1] (divide 8-bit pixels by 255)"),
    "wrong_image_dtype": (*_bad("encode", images=_images(2, 32, 32, 1, dtype=np.int32, value=0)),
                          "expected to be a float tensor but is a int32 tensor"),
    "wrong_label_dtype": (*_bad("fewshot_classify", support_labels=np.array([1, 2, 1, 2, 3, 3], np.int32)),
                          "expected to be a int64 tensor but is a int32 tensor"),
    "wrong_latent_size": (*_bad("decode", z=lambda shape, dim: np.zeros((2, dim + 1), np.float32)),
                          "decode: z must be [batch, {dim}] (latent size {dim}); got shape] [2 {dim1}]"),
    "non_finite_code": (*_bad("disentangle", z=lambda shape, dim: np.full((2, dim), np.nan, np.float32)),
                        "disentangle: z must be finite"),
    "translate_batch_mismatch": (*_bad("translate", image_b=_images(3, 32, 32, 1)),
                                 "translate: image_a, image_b, identity_weight, style_weight must have the "
                                 "same batch size; got] [4 3 4 4]"),
    "non_finite_weight": (*_bad("translate", style_weight=np.array([0.0, np.inf, 0.5, 0.5], np.float32)),
                          "translate: style_weight must be finite"),
    "weight_not_a_vector": (*_bad("translate", identity_weight=np.zeros((4, 1), np.float32)),
                            "translate: identity_weight must be a vector, shape [batch]; got shape] [4 1]"),
    "support_label_count": (*_bad("fewshot_classify", support_labels=np.array([1, 2, 3], np.int64)),
                            "fewshot_classify: support_images, support_labels must have the same batch size; "
                            "got] [6 3]"),
    "empty_support": (*_bad("fewshot_classify", support_images=_images(0, 32, 32, 1),
                            support_labels=np.zeros([0], np.int64)),
                      "fewshot_classify: the support set is empty"),
    "query_label_outside_support": (*_bad("fewshot_evaluate", query_labels=np.array([7, 5, 42, 9], np.int64)),
                                    "query_labels holds ids that are not among the support_labels; "
                                    "got] [5 9]"),
    "query_label_count": (*_bad("fewshot_evaluate", query_labels=np.array([7], np.int64)),
                          "fewshot_evaluate: query_images, query_labels must have the same batch size; "
                          "got] [4 1]"),
}


# ---------------------------------------------------------------------------------------------------------
# The serving page's snippets (docs/serving.md).


def serving_section():
  """The whole of docs/serving.md (the README links to it)."""
  with open(SERVING_DOC, encoding="utf-8") as f:
    text = f.read()
  assert text.startswith(SERVING_TITLE), "docs/serving.md is not the serving page"
  return text


def readme_block(must_contain, language="python"):
  """The one fenced block of the serving section in `language` that contains `must_contain`."""
  blocks = re.findall(r"```" + language + r"\n(.*?)```", serving_section(), flags=re.S)
  found = [b for b in blocks if must_contain in b]
  assert len(found) == 1, f"expected one ```{language} block with {must_contain!r}, found {len(found)}"
  return found[0]


# ---------------------------------------------------------------------------------------------------------
# The child process: no fden_tf; everything through tf.saved_model.load.


def _call(fn, inputs):
  return {k: v.numpy() for k, v in fn(**{k: tf.constant(v) for k, v in inputs.items()}).items()}


def _rest_predict(signatures, body, calls):
  """TF Serving's JSON predict API, emulated over the loaded signatures: the row form ("instances" ->
  "predictions") and the column form ("inputs" -> "outputs"), a lone input or output unnamed."""
  name = body.get("signature_name", "serving_default")
  fn = signatures[name]
  specs = fn.structured_input_signature[1]
  if ("instances" in body) == ("inputs" in body):
    raise ValueError("a predict body holds exactly one of 'instances' and 'inputs'")
  form = "instances" if "instances" in body else "inputs"
  if form == "instances":
    rows = body["instances"]
    if all(isinstance(r, dict) for r in rows):
      if any(set(r) != set(rows[0]) for r in rows):
        raise ValueError("every instance must name the same inputs")
      columns = {k: [r[k] for r in rows] for k in rows[0]}
    elif len(specs) == 1:
      columns = {next(iter(specs)): rows}
    else:
      raise ValueError("instances of a multi-input signature must be objects")
  else:
    columns = body["inputs"] if isinstance(body["inputs"], dict) else {next(iter(specs)): body["inputs"]}
  if set(columns) != set(specs):
    raise ValueError(f"{name} takes inputs {sorted(specs)}, got {sorted(columns)}")
  tensors = {}
  for key, value in columns.items():
    array = np.asarray(value)
    if specs[key].dtype.is_integer and array.size and array.dtype.kind not in "iu":
      raise ValueError(f"{key}: JSON values must be integers")
    tensors[key] = array.astype(specs[key].dtype.as_numpy_dtype)
  out = _call(fn, tensors)
  calls.append([name, form])
  if form == "inputs":
    return {"outputs": next(iter(out.values())).tolist() if len(out) == 1
            else {k: v.tolist() for k, v in out.items()}}
  sizes = {v.shape[0] if v.ndim else -1 for v in out.values()}
  if len(sizes) != 1 or -1 in sizes:
    raise ValueError(f"{name}: outputs of different batch sizes cannot be returned in the row form")
  if len(out) == 1:
    return {"predictions": next(iter(out.values())).tolist()}
  return {"predictions": [{k: v[i].tolist() for k, v in out.items()} for i in range(sizes.pop())]}


def _run_readme_rest(signatures):
  """Runs docs/serving.md's REST block verbatim, `urllib.request.urlopen` answered by the loaded
  signatures."""
  import urllib.request
  calls = []

  def urlopen(request, *args, **kwargs):
    match = re.fullmatch(r"http://localhost:8501/v1/models/([^/:]+)(?:/versions/\d+)?:predict",
                         request.full_url)
    assert match and match.group(1) == MODEL, request.full_url
    assert request.get_method() == "POST"
    body = json.loads(request.data.decode())
    return io.BytesIO(json.dumps(_rest_predict(signatures, body, calls)).encode())

  real = urllib.request.urlopen
  urllib.request.urlopen = urlopen
  try:
    namespace = {}
    exec(readme_block("urllib.request"), namespace)
  finally:
    urllib.request.urlopen = real
  return namespace, calls


def _run_readme_grpc(signatures):
  """Runs docs/serving.md's gRPC block verbatim, the PredictionService stub answered by the loaded
  signatures."""
  from tensorflow_serving.apis import predict_pb2
  from tensorflow_serving.apis import prediction_service_pb2_grpc
  calls = []

  class Stub:
    def __init__(self, channel):
      del channel

    def Predict(self, request, timeout=None):  # noqa: N802 (the gRPC method's name)
      assert request.model_spec.name == MODEL and timeout
      name = request.model_spec.signature_name or "serving_default"
      out = _call(signatures[name], {k: tf.make_ndarray(v) for k, v in request.inputs.items()})
      calls.append([name, "grpc"])
      response = predict_pb2.PredictResponse(model_spec=request.model_spec)
      for key, value in out.items():
        response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
      return response

  real = prediction_service_pb2_grpc.PredictionServiceStub
  prediction_service_pb2_grpc.PredictionServiceStub = Stub
  try:
    namespace = {}
    exec(readme_block("PredictionServiceStub"), namespace)
  finally:
    prediction_service_pb2_grpc.PredictionServiceStub = real
  return namespace, calls


def empty_inputs(image_shape, dim):
  """signature -> a request with an empty batch (no images, no codes, or no queries)."""
  images = np.zeros((0, *image_shape), np.float32)
  codes = np.zeros((0, dim), np.float32)
  weights = np.zeros([0], np.float32)
  return {"encode": {"images": images}, "disentangle": {"z": codes},
          "entangle": {"f_ide": codes, "f_sty": codes}, "decode": {"z": codes},
          "translate": {"image_a": images, "image_b": images, "identity_weight": weights,
                        "style_weight": weights},
          "fewshot_classify": {"support_images": np.full((2, *image_shape), 0.5, np.float32),
                               "support_labels": np.array([3, 4], np.int64), "query_images": images}}


def fewshot_memory(fewshot_classify, image_shape, rows=3000):
  """MiB the process's peak memory grows by while fewshot_classify answers `rows` support images of distinct
  labels and `rows` queries (Q x N x D floats at once would be rows^2 x D x 4 bytes: 1.1 GiB at D = 32)."""
  import resource
  rng = np.random.default_rng(2)
  request = {"support_images": rng.random((rows, *image_shape), dtype=np.float32),
             "support_labels": np.arange(rows, dtype=np.int64),
             "query_images": rng.random((rows, *image_shape), dtype=np.float32)}
  before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  out = _call(fewshot_classify, request)
  after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  assert out["probabilities"].shape == (rows, rows)
  return {"growth_mib": (after - before) / 1024, "classes": len(out["classes"])}


def _error_of(fn, inputs):
  try:
    _call(fn, inputs)
  except Exception as e:  # noqa: BLE001 (the message is what is checked)
    return f"{type(e).__name__}: {e}"
  return None


def child_main(version_dir, work_dir):
  """Everything the test needs from the loaded SavedModel, written to `work_dir` (results.json,
  outputs.npz)."""
  try:
    import fden_tf  # noqa: F401
    raise AssertionError("fden_tf is importable in the child")
  except ImportError:
    pass
  loaded = tf.saved_model.load(version_dir)
  signatures = loaded.signatures
  with open(os.path.join(version_dir, "assets.extra", "fden_export.json")) as f:
    info = json.load(f)
  image_shape, dim = tuple(info["image_shape"]), info["latent_dim"]
  results = {"signatures": sorted(signatures), "info": info}

  outputs = {}
  for name, inputs in equality_inputs(image_shape, dim).items():
    for key, value in _call(signatures[name], inputs).items():
      outputs[f"{name}/{key}"] = value
  np.savez(os.path.join(work_dir, "outputs.npz"), **outputs)

  results["bad"] = {case: _error_of(signatures[sig], build(image_shape, dim))
                    for case, (sig, build, _) in BAD_INPUTS.items()}
  results["empty"] = {name: {k: list(v.shape) for k, v in _call(signatures[name], inputs).items()}
                      for name, inputs in empty_inputs(image_shape, dim).items()}
  results["memory"] = fewshot_memory(signatures["fewshot_classify"], image_shape)

  from tensorflow_serving.apis import prediction_log_pb2
  warmup = []
  path = os.path.join(version_dir, "assets.extra", "tf_serving_warmup_requests")
  for record in tf.data.TFRecordDataset(path):
    log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
    request = log.predict_log.request
    out = _call(signatures[request.model_spec.signature_name],
                {k: tf.make_ndarray(v) for k, v in request.inputs.items()})
    warmup.append({"signature": request.model_spec.signature_name, "model": request.model_spec.name,
                   "outputs": sorted(out)})
  results["warmup"] = warmup

  rest, results["rest_calls"] = _run_readme_rest(signatures)
  direct = _call(signatures["encode"], {"images": rest["a"]})
  results["rest"] = {
      "encode_rows_vs_direct": float(np.max(np.abs(np.array([r["z"] for r in rest["rows"]]) - direct["z"]))),
      "encode_columns_vs_direct": float(np.max(np.abs(np.array(rest["codes"]["z"]) - direct["z"]))),
      "mixed_shape": list(np.shape(rest["mixed"])), "grid_shape": list(np.shape(rest["grid"])),
      "classes": rest["result"]["classes"], "labels": rest["result"]["labels"],
      "accuracy": rest["scored"]["accuracy"]}
  grpc_ns, results["grpc_calls"] = _run_readme_grpc(signatures)
  results["grpc"] = {"mixed_shape": list(grpc_ns["mixed"].shape),
                     "classes": grpc_ns["result"]["classes"].tolist(),
                     "accuracy": float(grpc_ns["scored"]["accuracy"])}
  with open(os.path.join(work_dir, "results.json"), "w") as f:
    json.dump(results, f, indent=1)


# ---------------------------------------------------------------------------------------------------------
# The parent: one tiny run, exported once; every test reads from it.


def _train_tiny_run(run_dir):
  """A run directory as scripts/train.py leaves it (config.json, ali/checkpoints, fden/checkpoints): glyphs,
  ALI and FDEN trained for two steps each by the library's own train functions. The evaluation and figures of
  a full run are left out (they are not exported), and tf.functions run eagerly (tracing the train steps would
  take most of this file's time budget; eager runs the same maths)."""
  from fden_tf import config as config_lib
  from fden_tf import fden as fden_lib
  from fden_tf import plugin
  from fden_tf import train_ali
  from fden_tf import train_fden
  from fden_tf.data import datasets
  config = config_lib.smoke().replace(
      data={"glyphs_classes": 40, "glyphs_test_classes": 10, "glyphs_samples_per_class": 4},
      ali={"steps": 2, "batch_size": 16}, fden={"steps": 2, "episodes_per_batch": 2})
  run_dir.mkdir()
  (run_dir / "config.json").write_text(config.to_json())
  data = datasets.load(config.data).train
  tf.config.run_functions_eagerly(True)
  try:
    ali = train_ali.build_ali(config.ali, data.image_shape, data.images)
    train_ali.train(ali, config.ali, data.images, str(run_dir / "ali"), seed=0, show_progress=False)
    latents = plugin.encode_all(plugin.from_ali(ali), data.images)
    fden = fden_lib.FDEN.from_config_section(latents.shape[1], config.fden)
    train_fden.train(fden, config.fden, latents, data.labels, str(run_dir / "fden"), seed=0,
                     show_progress=False)
  finally:
    tf.config.run_functions_eagerly(False)


def run_export_script(*flags):
  return subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "export.py"), *flags],
                        capture_output=True, text=True, timeout=300, env=_env(), cwd=ROOT)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  """Trains, exports with scripts/export.py (into a model folder already holding versions 3 and 7), then
  runs the child and saved_model_cli side by side. Returns a dict of everything the tests check."""
  from fden_tf import export
  tmp = tmp_path_factory.mktemp("serving")
  run_dir, base, work = tmp / "run", tmp / "saved_models", tmp / "child"
  work.mkdir()
  _train_tiny_run(run_dir)
  model_dir = base / MODEL
  (model_dir / "3").mkdir(parents=True)
  (model_dir / "3" / "keep.txt").write_text("an older version")
  (model_dir / "7").mkdir()
  (model_dir / "latest").mkdir()  # not an integer: not a version
  result = run_export_script(f"--run_dir={run_dir}", f"--export_dir={base}", f"--name={MODEL}")
  assert result.returncode == 0, result.stderr[-3000:]
  version_dir = str(model_dir / "8")
  assert result.stdout.strip().splitlines()[-1] == f"wrote {version_dir}"

  # The child and saved_model_cli run side by side while this process restores the in-process model.
  cli = subprocess.Popen(["saved_model_cli", "show", "--dir", version_dir, "--all"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=_env())
  child_code = (f"import sys; sys.modules['fden_tf'] = None; sys.path.insert(0, {TESTS!r}); "
                f"import test_export; test_export.child_main({version_dir!r}, {str(work)!r})")
  child = subprocess.Popen([sys.executable, "-c", child_code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, env=_env(), cwd=str(tmp))
  ali, fden, image_shape = export.load_run(str(run_dir))
  _, child_err = child.communicate(timeout=300)
  cli_out, cli_err = cli.communicate(timeout=300)
  assert child.returncode == 0, child_err[-5000:]
  assert cli.returncode == 0, cli_err[-3000:]
  with open(work / "results.json") as f:
    results = json.load(f)
  return {"run_dir": run_dir, "model_dir": model_dir, "version_dir": version_dir, "ali": ali, "fden": fden,
          "image_shape": image_shape, "results": results, "outputs": dict(np.load(work / "outputs.npz")),
          "saved_model_cli": cli_out}


def _reference(ali, fden, image_shape):
  """The in-process model's answers to equality_inputs (Keras models eager, numpy prototypes)."""
  from fden_tf import plugin
  plugged = plugin.from_ali(ali)
  inputs = equality_inputs(image_shape, fden.dim)
  out = {}
  z = plugged.encode(inputs["encode"]["images"])
  f_ide, f_sty = fden.disentangle(z)
  out.update({"encode/z": z, "encode/f_ide": f_ide, "encode/f_sty": f_sty})
  f_ide, f_sty = fden.disentangle(inputs["disentangle"]["z"])
  out.update({"disentangle/f_ide": f_ide, "disentangle/f_sty": f_sty})
  out["entangle/z"] = fden.entangle(inputs["entangle"]["f_ide"], inputs["entangle"]["f_sty"])
  out["decode/images"] = plugged.decode(inputs["decode"]["z"])
  t = inputs["translate"]
  ide_a, sty_a = fden.disentangle(plugged.encode(t["image_a"]))
  ide_b, sty_b = fden.disentangle(plugged.encode(t["image_b"]))
  w_ide, w_sty = t["identity_weight"][:, None], t["style_weight"][:, None]
  out["translate/images"] = plugged.decode(fden.entangle(w_ide * ide_a + (1 - w_ide) * ide_b,
                                                         w_sty * sty_a + (1 - w_sty) * sty_b))
  for name in ("fewshot_classify", "fewshot_evaluate"):
    f = inputs[name]
    support = np.asarray(fden.disentangle(plugged.encode(f["support_images"]))[0], np.float64)
    query = np.asarray(fden.disentangle(plugged.encode(f["query_images"]))[0], np.float64)
    classes = np.unique(f["support_labels"])
    prototypes = np.stack([support[f["support_labels"] == c].mean(0) for c in classes])
    logits = -np.sum((query[:, None] - prototypes[None]) ** 2, -1)
    probabilities = np.exp(logits - logits.max(1, keepdims=True))
    probabilities /= probabilities.sum(1, keepdims=True)
    out.update({f"{name}/probabilities": probabilities, f"{name}/classes": classes,
                f"{name}/labels": classes[np.argmax(logits, 1)]})
    if name == "fewshot_evaluate":
      correct = out[f"{name}/labels"] == f["query_labels"]
      out.update({f"{name}/correct": correct, f"{name}/accuracy": correct.mean()})
  return {k: np.asarray(v) for k, v in out.items()}


# ---------------------------------------------------------------------------------------------------------
# Tests.


def test_loads_without_fden_tf_and_equals_the_in_process_model(exported):
  results = exported["results"]
  assert results["signatures"] == sorted(SIGNATURES)
  reference = _reference(exported["ali"], exported["fden"], exported["image_shape"])
  outputs = exported["outputs"]
  assert set(outputs) == set(reference)
  for key, expected in reference.items():
    got = outputs[key]
    assert got.shape == expected.shape, key
    if key.endswith(("/labels", "/correct", "/accuracy")):
      continue  # argmaxes: a few training steps leave near-ties, compared through the probabilities below
    if expected.dtype.kind in "iub":
      np.testing.assert_array_equal(got, expected, err_msg=key)
    else:
      np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5, err_msg=key)
  for name in ("fewshot_classify", "fewshot_evaluate"):
    # Each predicted label is a most probable class (ties are within float32 rounding here).
    probabilities, classes = outputs[f"{name}/probabilities"], outputs[f"{name}/classes"]
    columns = np.searchsorted(classes, outputs[f"{name}/labels"])
    assert np.all(classes[columns] == outputs[f"{name}/labels"])
    chosen = probabilities[np.arange(len(columns)), columns]
    np.testing.assert_allclose(chosen, probabilities.max(1), rtol=0, atol=1e-6)
  inputs = equality_inputs(exported["image_shape"], exported["fden"].dim)
  query_labels = inputs["fewshot_evaluate"]["query_labels"]
  correct = outputs["fewshot_evaluate/labels"] == query_labels
  np.testing.assert_array_equal(outputs["fewshot_evaluate/correct"], correct)
  assert outputs["fewshot_evaluate/accuracy"] == pytest.approx(correct.mean())
  assert outputs["fewshot_classify/classes"].tolist() == [7, 42, 1000]  # arbitrary ids, ascending
  assert outputs["fewshot_classify/labels"].dtype == np.int64
  np.testing.assert_allclose(outputs["fewshot_classify/probabilities"].sum(1), 1.0, atol=1e-6)


def test_saved_model_cli_lists_every_signature_with_dtypes(exported):
  out = exported["saved_model_cli"]
  for name in SIGNATURES:
    assert f"signature_def['{name}']:" in out, name
  assert "inputs['support_labels'] tensor_info:\n        dtype: DT_INT64" in out
  assert "outputs['images'] tensor_info:\n        dtype: DT_FLOAT\n        shape: (-1, 32, 32, 1)" in out


def test_version_layout_and_export_record(exported):
  model_dir = exported["model_dir"]
  # One above the highest integer version (3, 7 -> 8); older versions untouched; no temporary left.
  assert sorted(os.listdir(model_dir)) == ["3", "7", "8", "latest"]
  assert (model_dir / "3" / "keep.txt").read_text() == "an older version"
  assert os.listdir(model_dir / "7") == []
  version = model_dir / "8"
  assert (version / "saved_model.pb").is_file() and (version / "variables").is_dir()
  info = exported["results"]["info"]
  assert info["image_shape"] == [32, 32, 1] and info["latent_dim"] == exported["fden"].dim
  assert info["run_dir"] == str(exported["run_dir"]) and info["signatures"] == list(SIGNATURES)


def test_warmup_file_holds_one_valid_request_per_signature(exported):
  warmup = exported["results"]["warmup"]
  assert [w["signature"] for w in warmup] == list(SIGNATURES)
  assert all(w["model"] == MODEL for w in warmup)
  assert {tuple(w["outputs"]) for w in warmup if w["signature"] == "fewshot_evaluate"} == {
      ("accuracy", "classes", "correct", "labels", "probabilities")}


def test_readme_rest_bodies_run_through_the_signatures(exported):
  results = exported["results"]
  calls = {tuple(c) for c in results["rest_calls"]}
  for name in SIGNATURES[:6]:  # every signature whose inputs share one batch size, in both forms
    assert (name, "instances") in calls and (name, "inputs") in calls, name
  assert ("fewshot_classify", "inputs") in calls and ("fewshot_evaluate", "inputs") in calls
  rest = results["rest"]
  assert rest["encode_rows_vs_direct"] == 0.0 and rest["encode_columns_vs_direct"] == 0.0  # JSON is exact
  assert rest["mixed_shape"] == [2, 32, 32, 1] and rest["grid_shape"] == [2, 32, 32, 1]
  assert rest["classes"] == [4, 17] and len(rest["labels"]) == 4 and set(rest["labels"]) <= {4, 17}
  assert 0.0 <= rest["accuracy"] <= 1.0


def test_readme_grpc_snippet_runs_through_the_signatures(exported):
  results = exported["results"]
  assert {c[0] for c in results["grpc_calls"]} == set(SIGNATURES)
  assert results["grpc"]["mixed_shape"] == [2, 32, 32, 1] and results["grpc"]["classes"] == [4, 17]


def test_readme_models_config_parses():
  from google.protobuf import text_format
  from tensorflow_serving.config import model_server_config_pb2
  config = text_format.Parse(readme_block("model_config_list", language="protobuf"),
                             model_server_config_pb2.ModelServerConfig())
  names = [c.name for c in config.model_config_list.config]
  assert MODEL in names and len(names) >= 2
  assert all(c.base_path.startswith("/models/") and c.model_platform == "tensorflow"
             for c in config.model_config_list.config)


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_a_clear_error(exported, case):
  signature, _, message = BAD_INPUTS[case]
  dim = exported["fden"].dim
  message = message.format(dim=dim, dim1=dim + 1)
  error = exported["results"]["bad"][case]
  assert error is not None, f"{case}: {signature} accepted bad input"
  assert error.startswith("InvalidArgumentError") and message in error, error[:1500]


def test_failed_export_leaves_no_version_behind(exported, tmp_path, monkeypatch):
  from fden_tf import export
  model_dir = tmp_path / MODEL
  (model_dir / "1").mkdir(parents=True)

  def save_then_fail(module, path, signatures=None):
    del module, signatures
    with open(os.path.join(path, "saved_model.pb"), "wb") as f:
      f.write(b"half a graph")
    raise OSError(28, "No space left on device")

  monkeypatch.setattr(export.tf.saved_model, "save", save_then_fail)
  with pytest.raises(OSError, match="No space left"):
    export.export(exported["ali"], exported["fden"], exported["image_shape"], str(tmp_path), MODEL)
  assert os.listdir(model_dir) == ["1"]  # no version 2, no temporary folder


def test_publish_never_overwrites_a_version_taken_meanwhile(tmp_path, monkeypatch):
  from fden_tf import export
  model_dir = tmp_path / "m"
  (model_dir / "1").mkdir(parents=True)
  tmp = model_dir / ".export-tmp-x"
  tmp.mkdir()
  (tmp / "saved_model.pb").write_text("ours")
  real_rename = os.rename

  def rename_after_a_rival(src, dst):
    if not os.path.exists(os.path.join(model_dir, "2")):  # a concurrent exporter publishes 2 first
      os.makedirs(os.path.join(model_dir, "2"))
      with open(os.path.join(model_dir, "2", "saved_model.pb"), "w") as f:
        f.write("theirs")
    real_rename(src, dst)

  monkeypatch.setattr(export.os, "rename", rename_after_a_rival)
  assert export._publish(str(tmp), str(model_dir)) == str(model_dir / "3")
  assert (model_dir / "2" / "saved_model.pb").read_text() == "theirs"
  assert (model_dir / "3" / "saved_model.pb").read_text() == "ours"


def test_next_version_counts_integer_names_only(tmp_path):
  from fden_tf import export
  assert export.next_version(str(tmp_path / "absent")) == 1
  for name in ("2", "10", "latest", ".export-tmp-1", "011x"):
    (tmp_path / name).mkdir()
  assert export.next_version(str(tmp_path)) == 11


def _partial_run(source, dest, keep):
  """A copy of the run directory `source` with only the entries in `keep`."""
  import shutil
  dest.mkdir()
  for name in keep:
    src = source / name
    (shutil.copytree if src.is_dir() else shutil.copy)(src, dest / name)
  return dest


@pytest.mark.parametrize("keep,error,message", [
    (None, FileNotFoundError, "does not exist"),
    ((), FileNotFoundError, "has no config.json"),
    (("config.json", "fden"), ValueError, "has no ali/checkpoints"),
    (("config.json", "ali"), ValueError, "has no fden/checkpoints"),
])
def test_export_run_refuses_incomplete_runs(exported, tmp_path, keep, error, message):
  from fden_tf import export
  run = tmp_path / "run" if keep is None else _partial_run(exported["run_dir"], tmp_path / "run", keep)
  with pytest.raises(error, match=message):
    export.export_run(str(run), str(tmp_path / "out"))
  assert not (tmp_path / "out").exists()


def test_a_run_plugged_with_ali_dir_exports_the_ali_it_recorded(exported, tmp_path):
  from fden_tf import export
  run = _partial_run(exported["run_dir"], tmp_path / "plugged", ("config.json", "fden"))
  (run / "metrics.json").write_text(json.dumps({"plugged": {"kind": "ali",
                                                            "ali_dir": str(exported["run_dir"])}}))
  ali, fden, image_shape = export.load_run(str(run))
  assert image_shape == exported["image_shape"]
  restored = ali.variables + fden.variables
  for got, expected in zip(restored, exported["ali"].variables + exported["fden"].variables):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))

  gone = str(tmp_path / "gone")
  (run / "metrics.json").write_text(json.dumps({"plugged": {"kind": "ali", "ali_dir": gone}}))
  with pytest.raises(ValueError, match="its --ali_dir .*gone.* has no ali/checkpoints"):
    export.load_run(str(run))
  (run / "metrics.json").write_text(json.dumps({"plugged": {"kind": "saved"}}))
  with pytest.raises(ValueError, match="plugged your own network"):
    export.load_run(str(run))


def test_export_run_refuses_a_bad_name_or_base(exported, tmp_path):
  from fden_tf import export
  with pytest.raises(ValueError, match="plain folder name"):
    export.export_run(str(exported["run_dir"]), str(tmp_path), name="a/b")
  (tmp_path / "file").write_text("")
  with pytest.raises(ValueError, match="cannot create the export folder"):
    export.export(exported["ali"], exported["fden"], exported["image_shape"], str(tmp_path / "file"), "m")


@pytest.mark.parametrize("flags,message", [
    ([], "error: --run_dir is required"),
    (["--run_dir=/nonexistent/run"], "error: run directory /nonexistent/run does not exist"),
])
def test_export_script_bad_input_is_one_line_error_and_exit_2(flags, message):
  result = run_export_script(*flags)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1].startswith(message), result.stderr[-2000:]


# ---------------------------------------------------------------------------------------------------------
# Issue 17: hostile requests, unfinished runs, signals, modes.


def test_an_empty_batch_gives_empty_outputs(exported):
  dim, (h, w, c) = exported["fden"].dim, exported["image_shape"]
  assert exported["results"]["empty"] == {
      "encode": {"z": [0, dim], "f_ide": [0, dim], "f_sty": [0, dim]},
      "disentangle": {"f_ide": [0, dim], "f_sty": [0, dim]},
      "entangle": {"z": [0, dim]},
      "decode": {"images": [0, h, w, c]},
      "translate": {"images": [0, h, w, c]},
      "fewshot_classify": {"probabilities": [0, 2], "labels": [0], "classes": [2]},
  }


def test_fewshot_memory_stays_bounded_for_thousands_of_classes_and_queries(exported):
  memory = exported["results"]["memory"]
  assert memory["classes"] == 3000
  # 3000 x 3000 x D float32 differences at once (the old graph) is 1.1 GiB at D = 32; the answer itself
  # ([Q, N] probabilities) is 34 MiB.
  assert memory["growth_mib"] < 400, memory


def test_signatures_answer_the_same_whatever_the_chunk_size(exported):
  """Networks run CHUNK_ROWS rows at a time inside the signatures; the serving module with 2-row chunks
  (every request of equality_inputs split, the last chunk shorter) answers as the exported one."""
  from fden_tf import export
  module = export.ServingModule(exported["ali"], exported["fden"], exported["image_shape"], chunk_rows=2)
  for name, inputs in equality_inputs(exported["image_shape"], exported["fden"].dim).items():
    for key, value in _call(getattr(module, name), inputs).items():
      if key in ("labels", "correct", "accuracy"):
        continue  # argmaxes of near-ties after two training steps: the probabilities are compared
      np.testing.assert_allclose(value, exported["outputs"][f"{name}/{key}"], rtol=0, atol=1e-5,
                                 err_msg=f"{name}/{key}")


def test_prototype_distances_in_blocks_equal_the_direct_computation():
  from fden_tf import export
  rng = np.random.default_rng(3)
  support = rng.standard_normal((7, 3)).astype(np.float32)
  query = rng.standard_normal((5, 3)).astype(np.float32)
  labels = np.array([5, 1, 5, 9, 1, 9, 2], np.int64)
  whole = export.prototype_classify(support, labels, query)
  blocks = export.prototype_classify(support, labels, query, max_floats=4 * 3)  # 1 query per block
  for a, b in zip(whole, blocks):
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=0, atol=1e-7)


def test_exported_versions_get_the_usual_modes(exported):
  from fden_tf import files
  mask = files.umask()
  for root, folders, names in os.walk(exported["version_dir"]):
    assert os.stat(root).st_mode & 0o777 == 0o777 & ~mask, root
    for name in names:
      assert os.stat(os.path.join(root, name)).st_mode & 0o777 == 0o666 & ~mask, name


def _run_with_fden_steps(exported, tmp_path, steps):
  """A copy of the exported run whose config asks for `steps` FDEN steps (its checkpoint is at step 2)."""
  import shutil
  run = tmp_path / "run"
  shutil.copytree(exported["run_dir"], run)
  config = json.loads((run / "config.json").read_text())
  config["fden"]["steps"] = steps
  (run / "config.json").write_text(json.dumps(config))
  return run


def test_an_unfinished_run_is_refused_unless_allowed_and_then_its_step_is_recorded(exported, tmp_path,
                                                                                   monkeypatch):
  from fden_tf import export
  run = _run_with_fden_steps(exported, tmp_path, 5)
  with pytest.raises(ValueError, match=r"is unfinished: its FDEN checkpoint ckpt-2 is at step 2 of 5; .*"
                                       "--allow_unfinished"):
    export.export_run(str(run), str(tmp_path / "out"))
  assert not (tmp_path / "out").exists()
  # What would be written (the writing itself is tested above): the record handed to export().
  monkeypatch.setattr(export, "export", lambda ali, fden, image_shape, base, name, info: info)
  info = export.export_run(str(run), str(tmp_path / "out"), allow_unfinished=True)
  assert (info["fden_step"], info["fden_steps"], info["finished"]) == (2, 5, False)
  assert info["fden_checkpoint"] == str(run / "fden" / "checkpoints" / "ckpt-2")


def test_a_finished_runs_export_records_its_step(exported):
  info = exported["results"]["info"]
  assert (info["fden_step"], info["fden_steps"], info["finished"]) == (2, 2, True)


def test_sigterm_during_an_export_removes_its_temporary_folder(exported, tmp_path):
  import signal
  import time
  base = tmp_path / "models"
  proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "scripts", "export.py"),
                           f"--run_dir={exported['run_dir']}", f"--export_dir={base}", "--name=m"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=ROOT)
  try:
    deadline = time.time() + 240
    while not (base / "m").is_dir() or not any(n.startswith(".export-tmp-") for n in os.listdir(base / "m")):
      assert proc.poll() is None, proc.communicate()[1][-2000:]
      assert time.time() < deadline, "no temporary export folder within 240 s"
      time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
  assert err.strip().splitlines()[-1] == ("error: export interrupted by SIGTERM; the unfinished version was "
                                          "removed (nothing was published)")
  assert os.listdir(base / "m") == []


def test_a_signal_whose_exception_tensorflow_rewrapped_still_stops_the_export_as_that_signal():
  """A SIGTERM that lands inside TensorFlow's C++ (tracing a signature) comes out as another exception (a
  TypeError from nest.flatten, seen in the test above); the export must still end as `Interrupted`."""
  import signal
  import time
  from fden_tf import export
  with pytest.raises(export.Interrupted) as info:
    with export._signals_raise():  # pylint: disable=protected-access
      try:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler runs here
      except export.Interrupted:
        raise TypeError("what nest.flatten raises when a signal interrupts it") from None
  assert info.value.signum == signal.SIGTERM and info.value.code == 128 + signal.SIGTERM
  assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the handler is gone again
  with pytest.raises(TypeError):  # without a signal, an error is what it is
    with export._signals_raise():  # pylint: disable=protected-access
      raise TypeError("a real error")


def test_a_signal_whose_exception_was_swallowed_still_stops_the_export_before_it_publishes(tmp_path, monkeypatch):
  """Python runs a signal handler wherever the main thread happens to be: in a finaliser or under a
  library's catch-all its exception is lost. The export must still stop before publishing (CI once saw
  exit 0 and a published version after a SIGTERM mid-save)."""
  import signal
  import time
  from fden_tf import ali as ali_lib
  from fden_tf import export
  from fden_tf import fden as fden_lib

  def save_that_swallows(module, tmp_dir, signatures=None):
    del module, signatures
    with open(os.path.join(tmp_dir, "saved_model.pb"), "w") as f:
      f.write("half")
    try:
      os.kill(os.getpid(), signal.SIGTERM)
      time.sleep(5)  # the handler runs here
    except export.Interrupted:
      pass  # lost, as in a __del__

  monkeypatch.setattr(export.tf.saved_model, "save", save_that_swallows)
  ali = ali_lib.ALI("svhn", 8, 1, 0.125, name="ali")
  model = fden_lib.FDEN(8, hidden_scale=0.05)
  with pytest.raises(export.Interrupted) as info:
    export.export(ali, model, (32, 32, 1), str(tmp_path), "m")
  assert info.value.code == 128 + signal.SIGTERM
  assert os.listdir(tmp_path / "m") == []  # nothing published, the temporary folder removed
  assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_temporary_folders_of_dead_exports_are_removed(tmp_path):
  import socket
  import time
  from fden_tf import export
  dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                        text=True, check=True)
  dead_pid, host = int(dead.stdout), socket.gethostname()
  names = {"dead": f".export-tmp-{dead_pid}@{host}-a1b2", "alive": f".export-tmp-{os.getpid()}@{host}-c3d4",
           "other_host": f".export-tmp-{dead_pid}@not-{host}-e5f6", "legacy_new": ".export-tmp-g7h8",
           "legacy_old": ".export-tmp-i9j0", "version": "1"}
  for name in names.values():
    (tmp_path / name).mkdir()
    (tmp_path / name / "saved_model.pb").write_text("x")
  two_days_ago = time.time() - 2 * 24 * 3600
  os.utime(tmp_path / names["legacy_old"], (two_days_ago, two_days_ago))
  removed = export.remove_stale_temporaries(str(tmp_path))
  assert sorted(removed) == sorted(str(tmp_path / names[k]) for k in ("dead", "legacy_old"))
  kept = ("alive", "other_host", "legacy_new", "version")
  assert sorted(os.listdir(tmp_path)) == sorted(names[k] for k in kept)


def test_a_narrow_style_factor_is_served_at_its_own_size():
  """With FDENConfig.style_dim the signatures give and take f_sty of that size (warmup requests too), the
  answers are the in-process model's, and an f_sty of Dim is refused by name."""
  from fden_tf import ali as ali_lib
  from fden_tf import export
  from fden_tf import fden as fden_lib
  image_shape, dim, style_dim = (32, 32, 1), 8, 3
  ali = ali_lib.ALI("svhn", dim, 1, 0.125, name="ali")
  model = fden_lib.FDEN(dim, hidden_scale=0.05, style_dim=style_dim)
  module = export.ServingModule(ali, model, image_shape)
  images = np.random.default_rng(0).random((3, *image_shape), dtype=np.float32)
  encoded = module.encode(tf.constant(images))
  assert [encoded[k].shape[-1] for k in ("z", "f_ide", "f_sty")] == [dim, dim, style_dim]
  f_ide, f_sty = model.disentangle(ali.encode(images))
  np.testing.assert_allclose(encoded["f_sty"], f_sty, atol=1e-5)
  z = module.entangle(f_ide, f_sty)["z"]
  np.testing.assert_allclose(z, model.entangle(f_ide, f_sty), atol=1e-5)
  assert module.translate(images, images[::-1], tf.ones([3]), tf.zeros([3]))["images"].shape == (3, *image_shape)
  with pytest.raises(tf.errors.InvalidArgumentError, match=f"f_sty must be \\[batch, {style_dim}\\]"):
    module.entangle(f_ide, tf.zeros([3, dim]))
  warmup = export._warmup_inputs(image_shape, dim, style_dim)["entangle"]
  assert (warmup["f_ide"].shape, warmup["f_sty"].shape) == ((2, dim), (2, style_dim))

"""SavedModel export for TF Serving: the plugged encoder/decoder and FDEN, frozen, in inference mode.

`export_run(run_dir, export_base)` restores a finished run (`runs.load_run`: `<run>/config.json`,
`<run>/fden/checkpoints` and the ALI of `<run>/ali/` or of the run's --ali_dir) and writes
`<export_base>/<name>/<version>/`, the layout TF Serving polls:

    <version>/saved_model.pb, variables/       the graph and the frozen weights (ALI's G_z and G_x, FDEN's
                                               Disentangler and Entangler; no discriminator, no F_mi)
    <version>/assets.extra/tf_serving_warmup_requests   one PredictionLog per signature (TFRecord)
    <version>/assets.extra/fden_export.json    what was exported: source run, shapes, signatures

The version is one above the highest integer version present. It is written to a hidden temporary folder
beside it (`.export-tmp-<pid>@<host>-*`) and renamed into place only when complete, so a poller never sees
half a model, and an existing version is never overwritten. SIGTERM or SIGHUP during an export removes the
temporary folder before the process exits (status 128 + the signal); one left by a process that died
otherwise (SIGKILL, a crash) is removed by the next export into the same model folder. Versions get the
usual modes (0644 files, 0755 folders under umask 022), so a model server running as another user can read
them. `export_run` refuses a run whose FDEN has not reached its configured steps unless told otherwise;
`fden_export.json` records the step exported.

Signatures (B, S, Q: free batch sizes; H x W x C: the image shape; D: the latent size; all float32 but
labels, int64). Every input is declared with an unknown shape and checked inside the graph, so a bad request
fails with the same clear message from Python, REST and gRPC (a static shape would let TensorFlow drop the
checks at trace time, and TF Serving does not check fed shapes itself):

    serving_default, encode  images [B, H, W, C] in [0, 1] -> z, f_ide, f_sty [B, D]
    disentangle              z [B, D] -> f_ide, f_sty [B, D]
    entangle                 f_ide, f_sty [B, D] -> z [B, D]
    decode                   z [B, D] -> images [B, H, W, C]
    translate                image_a, image_b [B, H, W, C], identity_weight, style_weight [B]
                             -> images [B, H, W, C], decoding E(w_ide f_ide^A + (1 - w_ide) f_ide^B,
                                                               w_sty f_sty^A + (1 - w_sty) f_sty^B)
    fewshot_classify         support_images [S, H, W, C], support_labels int64 [S] (any ids),
                             query_images [Q, H, W, C] -> probabilities [Q, N], labels int64 [Q],
                             classes int64 [N] (the N distinct support ids, ascending: the columns)
    fewshot_evaluate         fewshot_classify's inputs + query_labels int64 [Q] -> its outputs + correct
                             bool [Q], accuracy float32 []

Few-shot classification is the paper's (Eq. 5 at test time): class prototypes are the mean f_ide of each
class's support images, and a query's class probabilities are the softmax of minus its squared Euclidean
distance to each prototype.

Memory. A request's memory is bounded by its own size, whatever its batch: the networks run over
`CHUNK_ROWS` rows at a time (a `tf.while_loop`; inference-mode batch norm makes the result independent of
the split), and few-shot distances are computed for as many queries at a time as keep one [rows, N, D]
difference block within `DISTANCE_FLOATS` floats, so the largest intermediate is the [Q, N] answer itself.
An empty batch (B = 0, or Q = 0) gives empty outputs.
"""

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import tempfile
import threading
import time
import types

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import model_pb2
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_log_pb2

from fden_tf import files
from fden_tf import runs

WARMUP_FILE = "tf_serving_warmup_requests"
INFO_FILE = "fden_export.json"
SIGNATURES = ("serving_default", "encode", "disentangle", "entangle", "decode", "translate",
              "fewshot_classify", "fewshot_evaluate")
_VERSION = re.compile(r"^\d+$")
_ANY = tf.TensorSpec(None, tf.float32)  # unknown rank: checked in the graph (see the module docstring)
_ANY_LABELS = tf.TensorSpec(None, tf.int64)
CHUNK_ROWS = 256  # rows (images or codes) per network pass inside a signature
DISTANCE_FLOATS = 1 << 22  # floats (16 MiB) of one [queries, N, D] block of few-shot differences


# ---------------------------------------------------------------------------------------------------------
# Input checks inside the graph.


def _require(condition, message, *data):
  """An assert op: fails with `message` followed by `data` (e.g. the shape received) when not `condition`."""
  return tf.debugging.Assert(condition, [message, *data], summarize=8)


def _shape_is(x, trailing):
  """True when `x` has shape [batch, *trailing]. Never fails itself, whatever the rank of `x`: the shape is
  padded to a fixed length before comparing (an assert cannot be relied on to run before a failing op that
  does not depend on it, once Grappler has rewritten the graph)."""
  shape = tf.shape(x)
  padded = tf.concat([shape[1:], tf.fill([len(trailing)], -1)], axis=0)[:len(trailing)]
  return tf.logical_and(tf.equal(tf.size(shape), len(trailing) + 1),
                        tf.reduce_all(tf.equal(padded, tf.constant(trailing, tf.int32))))


def _check_trailing(x, trailing, what):
  """Asserts `x` is [batch, *trailing] and returns it with that static shape for the layers after it."""
  with tf.control_dependencies([_require(_shape_is(x, trailing), f"{what}; got shape", tf.shape(x))]):
    return tf.ensure_shape(tf.identity(x), [None, *trailing])


def _check_images(images, name, image_shape, signature):
  """images: float32 [B, H, W, C] with values in [0, 1] -> the same tensor, its shape static."""
  h, w, c = image_shape
  what = f"{signature}: {name} must be a batch of {h}x{w}x{c} images, shape [batch, {h}, {w}, {c}]"
  images = _check_trailing(images, list(image_shape), what)
  # NaN fails both comparisons, so it is refused too.
  in_range = tf.reduce_all(tf.logical_and(images >= 0.0, images <= 1.0))
  with tf.control_dependencies([_require(
      in_range, f"{signature}: {name} pixel values must lie in [0, 1] (divide 8-bit pixels by 255); "
      "got min, max", tf.reduce_min(images), tf.reduce_max(images))]):
    return tf.identity(images)


def _check_codes(x, name, dim, signature, size_name="latent size"):
  """x: float32 [B, D], finite -> the same tensor, its shape static."""
  x = _check_trailing(x, [dim], f"{signature}: {name} must be [batch, {dim}] ({size_name} {dim})")
  with tf.control_dependencies([_require(tf.reduce_all(tf.math.is_finite(x)),
                                         f"{signature}: {name} must be finite (no NaN or inf)")]):
    return tf.identity(x)


def _check_vector(x, name, signature, finite=False):
  """x: [B] -> the same tensor (finite when asked)."""
  x = _check_trailing(x, [], f"{signature}: {name} must be a vector, shape [batch]")
  if finite:
    with tf.control_dependencies([_require(tf.reduce_all(tf.math.is_finite(x)),
                                           f"{signature}: {name} must be finite (no NaN or inf)")]):
      x = tf.identity(x)
  return x


def _check_same_batch(signature, **tensors):
  """Asserts every tensor has the same leading size; returns the assert op."""
  names = list(tensors)
  sizes = tf.stack([tf.shape(t)[0] for t in tensors.values()])
  return _require(tf.reduce_all(tf.equal(sizes, sizes[0])),
                  f"{signature}: {', '.join(names)} must have the same batch size; got", sizes)


# ---------------------------------------------------------------------------------------------------------
# Bounded memory.


def in_chunks(fn, inputs, rows, output_specs):
  """`fn(*slices)` over consecutive slices of `rows` rows of `inputs` (tensors of one batch size B; the last
  slice shorter), outputs concatenated: memory of one slice whatever B, and B = 0 gives empty outputs.

  rows: int or int32 scalar tensor. output_specs: a TensorSpec per output of `fn`, shape without the batch
  dimension. Returns a tuple of [B, *spec.shape] tensors.
  """
  count = (tf.shape(inputs[0])[0] + rows - 1) // rows
  arrays = tuple(tf.TensorArray(spec.dtype, size=count, infer_shape=False,
                                element_shape=tf.TensorShape([None]).concatenate(spec.shape))
                 for spec in output_specs)

  def body(i, arrays):
    outputs = fn(*[x[i * rows:(i + 1) * rows] for x in inputs])
    return i + 1, tuple(a.write(i, o) for a, o in zip(arrays, outputs))

  # One slice at a time: parallel iterations would hold several slices' activations at once.
  _, arrays = tf.while_loop(lambda i, _: i < count, body, (tf.constant(0), arrays), parallel_iterations=1)
  return tuple(tf.ensure_shape(a.concat(), [None, *spec.shape]) for a, spec in zip(arrays, output_specs))


# ---------------------------------------------------------------------------------------------------------
# The exported module.


def prototype_classify(f_support, support_labels, f_query, max_floats=DISTANCE_FLOATS):
  """Nearest-prototype classification with arbitrary integer class ids (Eq. 5's softmax at test time).

  f_support: [S, D]; support_labels: int64 [S]; f_query: [Q, D]. Returns (probabilities [Q, N], labels
  int64 [Q], classes int64 [N]): the softmax over -||f_q - prototype_n||^2, the id of the nearest prototype,
  and the N distinct support ids in ascending order (the columns of probabilities).
  """
  classes = tf.sort(tf.unique(support_labels).y)
  index = tf.searchsorted(classes, support_labels)  # each support sample's column
  prototypes = tf.math.unsorted_segment_mean(f_support, index, tf.size(classes))  # [N, D]
  # The direct difference, not ||q||^2 - 2 q.p + ||p||^2 (exact for far-apart codes), for as many queries at
  # a time as keep the [rows, N, D] block within max_floats: Q x N x D at once grows without bound.
  rows = tf.maximum(1, max_floats // tf.maximum(1, tf.size(prototypes)))
  blocks = lambda: in_chunks(lambda q: (tf.reduce_sum(tf.square(q[:, None, :] - prototypes[None]), axis=-1),),
                             (f_query,), rows, [tf.TensorSpec([None], tf.float32)])[0]
  # No queries: [0, N] directly (a TensorArray cannot concatenate zero blocks of unknown width N).
  squared = tf.cond(tf.shape(f_query)[0] > 0, blocks, lambda: tf.zeros([0, tf.size(classes)], tf.float32))
  return tf.nn.softmax(-squared, axis=-1), tf.gather(classes, tf.argmax(-squared, axis=-1)), classes


class ServingModule(tf.Module):
  """The SavedModel's root: frozen networks and one `tf.function` per signature.

  ali: a restored `ali.ALI` (its `encode` is the posterior mean of G_z, `decode` is G_x); fden: a restored
  `fden.FDEN`; image_shape: (H, W, C). Every network is called in inference mode (training=False: batch norm
  uses its moving statistics, no dropout); the gradient reversal layer and F_mi are not part of the export.
  """

  def __init__(self, ali, fden, image_shape, chunk_rows=CHUNK_ROWS):
    super().__init__(name="fden_serving")
    self.image_shape = tuple(int(d) for d in image_shape)
    self.latent_dim = int(fden.dim)
    self.style_dim = int(fden.style_dim)  # Dim, unless FDENConfig.style_dim narrows f_sty
    self.chunk_rows = int(chunk_rows)
    # A plain namespace keeps the Keras models out of the SavedModel's object graph (which would also pull
    # in the discriminator and F_mi); only the variables the signatures use are saved, listed below.
    self._nets = types.SimpleNamespace(ali=ali, fden=fden)
    self.frozen_variables = (list(ali.encoder.variables) + list(ali.generator.variables)
                             + list(fden.disentangler.variables) + list(fden.entangler.variables)
                             + fden.frozen_statistics)

  # Inference-mode building blocks, on checked inputs, each over CHUNK_ROWS rows at a time (in_chunks).
  def _chunked(self, fn, inputs, *output_shapes):
    return in_chunks(fn, inputs, self.chunk_rows, [tf.TensorSpec(s, tf.float32) for s in output_shapes])

  def _codes(self, fn, inputs, *sizes):
    return self._chunked(fn, inputs, *[[size] for size in sizes])

  def _decode(self, z):
    return self._chunked(lambda z: (self._nets.ali.decode(z),), (z,), self.image_shape)[0]

  def _disentangle(self, z):
    return self._codes(self._nets.fden.disentangle, (z,), self.latent_dim, self.style_dim)

  def _entangle(self, f_ide, f_sty):
    return self._codes(lambda i, s: (self._nets.fden.entangle(i, s),), (f_ide, f_sty), self.latent_dim)[0]

  def _factors(self, images):
    def factors(x):
      z = self._nets.ali.encode(x)
      return (z, *self._nets.fden.disentangle(z))
    return self._codes(factors, (images,), self.latent_dim, self.latent_dim, self.style_dim)

  @tf.function(input_signature=[_ANY], autograph=False)
  def encode(self, images):
    images = _check_images(images, "images", self.image_shape, "encode")
    z, f_ide, f_sty = self._factors(images)
    return {"z": z, "f_ide": f_ide, "f_sty": f_sty}

  @tf.function(input_signature=[_ANY], autograph=False)
  def disentangle(self, z):
    f_ide, f_sty = self._disentangle(_check_codes(z, "z", self.latent_dim, "disentangle"))
    return {"f_ide": f_ide, "f_sty": f_sty}

  @tf.function(input_signature=[_ANY, _ANY], autograph=False)
  def entangle(self, f_ide, f_sty):
    f_ide = _check_codes(f_ide, "f_ide", self.latent_dim, "entangle")
    f_sty = _check_codes(f_sty, "f_sty", self.style_dim, "entangle",
                         "latent size" if self.style_dim == self.latent_dim else "style size")
    with tf.control_dependencies([_check_same_batch("entangle", f_ide=f_ide, f_sty=f_sty)]):
      return {"z": self._entangle(f_ide, f_sty)}

  @tf.function(input_signature=[_ANY], autograph=False)
  def decode(self, z):
    return {"images": self._decode(_check_codes(z, "z", self.latent_dim, "decode"))}

  @tf.function(input_signature=[_ANY, _ANY, _ANY, _ANY], autograph=False)
  def translate(self, image_a, image_b, identity_weight, style_weight):
    """Factor mixing (Section 5.3): weight 1 takes A's factor, 0 takes B's, values between interpolate."""
    image_a = _check_images(image_a, "image_a", self.image_shape, "translate")
    image_b = _check_images(image_b, "image_b", self.image_shape, "translate")
    w_ide = _check_vector(identity_weight, "identity_weight", "translate", finite=True)
    w_sty = _check_vector(style_weight, "style_weight", "translate", finite=True)
    same = _check_same_batch("translate", image_a=image_a, image_b=image_b, identity_weight=w_ide,
                             style_weight=w_sty)
    with tf.control_dependencies([same]):
      # One encoder pass for both images (batch norm is in inference mode, so batching does not matter).
      _, f_ide, f_sty = self._factors(tf.concat([image_a, image_b], axis=0))
    ide_a, ide_b = tf.split(f_ide, 2)
    sty_a, sty_b = tf.split(f_sty, 2)
    w_ide, w_sty = w_ide[:, None], w_sty[:, None]
    z = self._entangle(w_ide * ide_a + (1.0 - w_ide) * ide_b, w_sty * sty_a + (1.0 - w_sty) * sty_b)
    return {"images": self._decode(z)}

  def _fewshot(self, support_images, support_labels, query_images, signature):
    """Checked inputs -> (probabilities [Q, N], labels [Q], classes [N]) by f_ide prototypes."""
    support_images = _check_images(support_images, "support_images", self.image_shape, signature)
    query_images = _check_images(query_images, "query_images", self.image_shape, signature)
    support_labels = _check_vector(support_labels, "support_labels", signature)
    checks = [_check_same_batch(signature, support_images=support_images, support_labels=support_labels),
              _require(tf.size(support_labels) > 0, f"{signature}: the support set is empty; give at least "
                       "one labelled support image")]
    with tf.control_dependencies(checks):
      num_support = tf.shape(support_images)[0]
      _, f_ide, _ = self._factors(tf.concat([support_images, query_images], axis=0))
    return prototype_classify(f_ide[:num_support], support_labels, f_ide[num_support:])

  @tf.function(input_signature=[_ANY, _ANY_LABELS, _ANY], autograph=False)
  def fewshot_classify(self, support_images, support_labels, query_images):
    probabilities, labels, classes = self._fewshot(support_images, support_labels, query_images,
                                                   "fewshot_classify")
    return {"probabilities": probabilities, "labels": labels, "classes": classes}

  @tf.function(input_signature=[_ANY, _ANY_LABELS, _ANY, _ANY_LABELS], autograph=False)
  def fewshot_evaluate(self, support_images, support_labels, query_images, query_labels):
    probabilities, labels, classes = self._fewshot(support_images, support_labels, query_images,
                                                   "fewshot_evaluate")
    query_labels = _check_vector(query_labels, "query_labels", "fewshot_evaluate")
    # A query id no support image carries can never be predicted: the request is wrong, not the model.
    nearest = tf.gather(classes, tf.minimum(tf.searchsorted(classes, query_labels), tf.size(classes) - 1))
    known = tf.equal(nearest, query_labels)
    checks = [_check_same_batch("fewshot_evaluate", query_images=probabilities, query_labels=query_labels),
              _require(tf.reduce_all(known), "fewshot_evaluate: query_labels holds ids that are not among "
                       "the support_labels; got", tf.boolean_mask(query_labels, tf.logical_not(known)))]
    with tf.control_dependencies(checks):
      correct = tf.equal(labels, query_labels)
    return {"probabilities": probabilities, "labels": labels, "classes": classes, "correct": correct,
            "accuracy": tf.reduce_mean(tf.cast(correct, tf.float32))}

  def signatures(self) -> dict:
    """name -> concrete function, for `tf.saved_model.save` (serving_default is encode)."""
    out = {name: getattr(self, name).get_concrete_function() for name in SIGNATURES[1:]}
    out["serving_default"] = out["encode"]
    return out


# ---------------------------------------------------------------------------------------------------------
# Warmup requests (TF Serving replays these before a version takes traffic).


def _warmup_inputs(image_shape, latent_dim, style_dim=None) -> dict:
  """signature -> inputs (numpy, the signature's dtypes): small valid requests, deterministic."""
  rng = np.random.default_rng(0)
  images = lambda n: rng.random((n, *image_shape), dtype=np.float32)
  codes = lambda n, size=latent_dim: rng.standard_normal((n, size)).astype(np.float32)
  fewshot = {"support_images": images(2), "support_labels": np.array([0, 1], np.int64),
             "query_images": images(2)}
  encode = {"images": images(2)}
  return {
      "serving_default": encode,
      "encode": encode,
      "disentangle": {"z": codes(2)},
      "entangle": {"f_ide": codes(2), "f_sty": codes(2, style_dim or latent_dim)},
      "decode": {"z": codes(2)},
      "translate": {"image_a": images(2), "image_b": images(2),
                    "identity_weight": np.array([1.0, 0.5], np.float32),
                    "style_weight": np.array([0.0, 0.5], np.float32)},
      "fewshot_classify": fewshot,
      "fewshot_evaluate": dict(fewshot, query_labels=np.array([1, 0], np.int64)),
  }


def warmup_logs(model_name, image_shape, latent_dim, style_dim=None) -> list:
  """One `PredictionLog` (a PredictRequest) per signature, in SIGNATURES order."""
  logs = []
  for signature, inputs in _warmup_inputs(image_shape, latent_dim, style_dim).items():
    request = predict_pb2.PredictRequest(
        model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature))
    for key, value in inputs.items():
      request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    logs.append(prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request)))
  return logs


def write_warmup(version_dir, logs):
  """Writes `assets.extra/tf_serving_warmup_requests`, the TFRecord TF Serving reads at load time."""
  folder = os.path.join(version_dir, "assets.extra")
  os.makedirs(folder, exist_ok=True)
  with tf.io.TFRecordWriter(os.path.join(folder, WARMUP_FILE)) as writer:
    for log in logs:
      writer.write(log.SerializeToString())


# ---------------------------------------------------------------------------------------------------------
# The versioned, atomic layout.


def existing_versions(model_dir) -> list:
  """Integer names present under `model_dir` (TF Serving ignores other names, and so do we). A file with an
  integer name counts too: that number is taken."""
  if not os.path.isdir(model_dir):
    return []
  return sorted(int(n) for n in os.listdir(model_dir) if _VERSION.match(n))


def next_version(model_dir) -> int:
  """One above the highest integer version present; 1 for a new model."""
  return max(existing_versions(model_dir), default=0) + 1


def _publish(tmp_dir, model_dir) -> str:
  """Renames the finished `tmp_dir` to the next free version; never replaces an existing one.

  The check and the rename are not one system call, so a concurrent exporter that takes the same number
  makes the rename fail (ENOTEMPTY/EEXIST) or the check see it: either way we move on to the next number.
  """
  for _ in range(100):
    final = os.path.join(model_dir, str(next_version(model_dir)))
    if os.path.exists(final):
      continue
    try:
      os.rename(tmp_dir, final)
      return final
    except OSError:
      if not os.path.exists(final):
        raise
  raise RuntimeError(f"could not find a free version number under {model_dir}")


# Temporary export folders: `.export-tmp-<pid>@<host>-<random>`, so a later export can tell a dead one.
_TMP_PREFIX = ".export-tmp-"
_TMP_NAME = re.compile(r"^\.export-tmp-(\d+)@(.+)-[^-]+$")
_LEGACY_TMP_AGE_S = 24 * 3600  # a temporary folder without a pid (older versions) this old is abandoned


class Interrupted(SystemExit):
  """A termination signal arrived during an export; the unfinished version was removed. Exits 128 + signal."""

  def __init__(self, signum):
    super().__init__(128 + signum)
    self.signum = signum

  def __str__(self):
    return (f"export interrupted by {signal.Signals(self.signum).name}; the unfinished version was removed "
            "(nothing was published)")


@contextlib.contextmanager
def _signals_raise(signums=(signal.SIGTERM, signal.SIGHUP)):
  """Within the block, SIGTERM/SIGHUP raise `Interrupted`, so `finally` clauses run (their default action
  kills the process on the spot, leaving the temporary folder behind). Only signals left at their default
  action, and only in the main thread (the only one where Python can install handlers).

  Yields `raise_if_signalled`, to call before a step that cannot be undone: the handler's exception can be
  swallowed where Python happens to run it (a finaliser, a library's catch-all), and the export would then
  go on to publish as if no signal had come (seen once in CI: exit 0 after a SIGTERM mid-save).
  """
  received = []

  def raise_if_signalled():
    if received:
      raise Interrupted(received[0])

  if threading.current_thread() is not threading.main_thread():
    yield raise_if_signalled
    return

  def handler(signum, frame):
    del frame
    received.append(signum)
    raise Interrupted(signum)

  previous = {}
  for signum in signums:
    if signal.getsignal(signum) == signal.SIG_DFL:
      previous[signum] = signal.signal(signum, handler)
  try:
    yield raise_if_signalled
  except Interrupted:
    raise
  except BaseException as e:
    # Raised inside a C extension, the handler's exception can come out as another one (TensorFlow's
    # tracing turns it into a TypeError from nest.flatten): it is still the signal that stopped the export.
    if received:
      raise Interrupted(received[0]) from e
    raise
  finally:
    for signum, old in previous.items():
      signal.signal(signum, old)


def _alive(pid) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True  # another user's process
  return True


def remove_stale_temporaries(model_dir) -> list:
  """Removes temporary export folders under `model_dir` whose exporting process is dead: one of this host
  whose pid no longer runs (a folder of another host is left to that host), or one of an older version
  (no pid in its name) untouched for a day. Returns the paths removed."""
  if not os.path.isdir(model_dir):
    return []
  host, removed = socket.gethostname(), []
  for name in os.listdir(model_dir):
    if not name.startswith(_TMP_PREFIX):
      continue
    path = os.path.join(model_dir, name)
    match = _TMP_NAME.match(name)
    if match:
      stale = match.group(2) == host and not _alive(int(match.group(1)))
    else:
      stale = time.time() - os.path.getmtime(path) > _LEGACY_TMP_AGE_S
    if stale:
      shutil.rmtree(path, ignore_errors=True)
      removed.append(path)
  return removed


def _check_name(name):
  if not name or name in (".", "..") or name.startswith(".") or "/" in name or os.sep in name:
    raise ValueError(f"model name {name!r} must be a plain folder name (no '/', not starting with '.')")


def export(ali, fden, image_shape, export_base, name, info=None, chunk_rows=CHUNK_ROWS) -> str:
  """Writes the SavedModel of (ali, fden) as the next version of `<export_base>/<name>`; returns its path.

  info: extra JSON-serialisable facts for `assets.extra/fden_export.json` (e.g. the source run).
  chunk_rows: rows per network pass inside the signatures (see the module docstring: bounded memory).
  """
  _check_name(name)
  model_dir = os.path.join(export_base, name)
  try:
    os.makedirs(model_dir, exist_ok=True)
  except OSError as e:
    raise ValueError(f"cannot create the export folder {model_dir} ({e.strerror})") from None
  remove_stale_temporaries(model_dir)
  module = ServingModule(ali, fden, image_shape, chunk_rows)
  with _signals_raise() as raise_if_signalled:
    # Hidden and not an integer: TF Serving's poller skips it while it is being written.
    tmp_dir = tempfile.mkdtemp(dir=model_dir, prefix=f"{_TMP_PREFIX}{os.getpid()}@{socket.gethostname()}-")
    try:
      _write_version(module, tmp_dir, name, info)
      raise_if_signalled()  # the rename below cannot be undone
      return _publish(tmp_dir, model_dir)
    finally:
      if os.path.exists(tmp_dir):  # only when something failed (or a signal came) before the rename
        shutil.rmtree(tmp_dir, ignore_errors=True)


def _write_version(module, tmp_dir, name, info):
  """The SavedModel, warmup requests and export record into `tmp_dir` (published by the caller)."""
  files.usual_mode(tmp_dir)  # mkdtemp's 0700 would keep a server running as another user out
  tf.saved_model.save(module, tmp_dir, signatures=module.signatures())
  write_warmup(tmp_dir, warmup_logs(name, module.image_shape, module.latent_dim, module.style_dim))
  record = dict(info or {}, name=name, image_shape=list(module.image_shape), latent_dim=module.latent_dim,
                style_dim=module.style_dim,
                signatures=list(SIGNATURES), tensorflow=tf.__version__,
                exported_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
  with open(os.path.join(tmp_dir, "assets.extra", INFO_FILE), "w") as f:
    json.dump(record, f, indent=2, sort_keys=True)


# ---------------------------------------------------------------------------------------------------------
# From a run directory.


def _ali_source(run_dir) -> str:
  """The run directory whose `ali/` the run plugged: the run itself, or its recorded --ali_dir."""
  try:
    source = runs.plugged_ali_dir(run_dir)
  except ValueError:
    raise ValueError(f"{run_dir} plugged your own network (--encoder/--decoder), not ALI; only runs on ALI "
                     "can be exported") from None
  if not os.path.isdir(os.path.join(source, "ali", "checkpoints")):
    where = "" if source == run_dir else f" (its --ali_dir {source})"
    raise ValueError(f"{run_dir}{where} has no ali/checkpoints: no ALI to export (was this run plugged into "
                     "another network, or is it unfinished?)")
  return source


def _restore(run_dir):
  runs.load_config(run_dir)  # a clear error for a folder that is not a run, before anything else
  _ali_source(run_dir)
  return runs.load_run(run_dir)


def load_run(run_dir):
  """Restores a finished run with `runs.load_run`: (ALI, FDEN, image_shape (H, W, C)). The ALI is the run's
  own or, for a run plugged with --ali_dir, the one its metrics.json records."""
  run = _restore(run_dir)
  return run.ali, run.fden, tuple(int(d) for d in run.ali.image_shape)


def checkpoint_step(path) -> int:
  """The training step a stage's checkpoint was saved at (training_loop's `step` variable)."""
  return int(tf.train.load_checkpoint(path).get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE"))


def export_run(run_dir: str, export_base: str, name: str = None, allow_unfinished: bool = False) -> str:
  """Exports a finished run as the next version of `<export_base>/<name>` (name: the run folder's name);
  returns the version directory written.

  A run whose FDEN has not reached its configured steps (killed, or still training) is refused: TF Serving
  would switch to it. allow_unfinished exports it anyway; fden_export.json records the step either way.
  """
  run_dir = os.path.normpath(run_dir)
  if not os.path.isdir(run_dir):
    raise FileNotFoundError(f"run directory {run_dir} does not exist")
  name = name or os.path.basename(os.path.abspath(run_dir))
  _check_name(name)  # before the restore
  run = _restore(run_dir)
  step, steps = checkpoint_step(run.fden_checkpoint), run.config.fden.total_steps
  if step < steps and not allow_unfinished:
    raise ValueError(f"{run_dir} is unfinished: its FDEN checkpoint {os.path.basename(run.fden_checkpoint)} "
                     f"is at step {step} of {steps}; finish it (re-run its scripts/train.py command, which "
                     "resumes) or pass --allow_unfinished to export it anyway")
  info = {"run_dir": os.path.abspath(run_dir), "ali_checkpoint": os.path.abspath(run.ali_checkpoint),
          "fden_checkpoint": os.path.abspath(run.fden_checkpoint), "fden_step": step, "fden_steps": steps,
          "finished": step >= steps}
  return export(run.ali, run.fden, tuple(int(d) for d in run.ali.image_shape), export_base, name, info)


# ---------------------------------------------------------------------------------------------------------
# Latency of the loaded SavedModel (a benchmark, not a test).


def benchmark_latency(version_dir, batch_sizes=(1, 64), repeats=20, way=5) -> list:
  """Median wall time of `translate` and `fewshot_classify` through `tf.saved_model.load`, on this machine.

  fewshot_classify gets a `way`-way 1-shot support set and `batch` queries. Returns rows
  {"signature", "batch", "median_ms", "p90_ms"}.
  """
  loaded = tf.saved_model.load(version_dir)
  with open(os.path.join(version_dir, "assets.extra", INFO_FILE)) as f:
    image_shape = tuple(json.load(f)["image_shape"])
  rng = np.random.default_rng(0)
  images = lambda n: tf.constant(rng.random((n, *image_shape), dtype=np.float32))
  rows = []
  for batch in batch_sizes:
    weights = tf.constant(rng.random(batch, dtype=np.float32))
    inputs = {"translate": dict(image_a=images(batch), image_b=images(batch), identity_weight=weights,
                                style_weight=weights),
              "fewshot_classify": dict(support_images=images(way), query_images=images(batch),
                                       support_labels=tf.range(way, dtype=tf.int64))}
    for signature, kwargs in inputs.items():
      call = lambda: loaded.signatures[signature](**kwargs)
      call()  # the first call pays one-off costs, as TF Serving's warmup does
      times = []
      for _ in range(repeats):
        t = time.perf_counter()
        call()
        times.append(1000 * (time.perf_counter() - t))
      rows.append({"signature": signature, "batch": batch, "median_ms": float(np.median(times)),
                   "p90_ms": float(np.percentile(times, 90))})
  return rows

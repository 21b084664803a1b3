"""Training under `tf.distribute`: picking a strategy, per-replica inputs, and the few cross-replica
operations the trainers' maths needs. The trainers keep their own `tf.GradientTape` loops; this module
holds everything that differs between one device and many, so the step functions read as the algorithm.

What stays the same on any number of replicas (a test checks one ALI and one FDEN step against one
device, within 1e-5):

* The global batch. `batch_size` images (ALI) and `episodes_per_batch` episodes (FDEN) are global; each
  replica gets a contiguous 1/R of them, whole images or whole episodes, from `StepInputs`. Every
  replica's share is sliced out of the one-device batch of that (seed, step), so resuming stays exact.
* Losses averaged over the global batch. A replica differentiates its own mean divided by R (shares of
  equal size), and `all_sum` of the shares is the global mean; gradients likewise.
* Batch-norm statistics over the global batch (`synchronize_batch_norm`, Keras's `synchronized=True`):
  every replica normalises with the mean and variance of all replicas' samples, and the moving averages
  stay identical on all replicas. Keras's default under a strategy, per-replica statistics, would make a
  replica's batch norm see only B/R samples and let the replicas' moving averages drift apart.
* The divergence guard: every replica decides finiteness from the same all-reduced losses and gradients,
  and the update is applied in cross-replica context (`apply_gradients`), where `tf.cond` may skip it.
"""

import os
import shutil
import tempfile

import keras
import tensorflow as tf

STRATEGIES = ("auto", "mirrored", "multiworker", "one_device")
_DEFAULT = tf.distribute.get_strategy()  # TensorFlow's default strategy (a singleton)


def get_strategy(strategy="auto") -> tf.distribute.Strategy:
  """A strategy by name (`STRATEGIES`) or the strategy object itself.

  auto: `MirroredStrategy` over every local GPU when there is at least one, else TensorFlow's default
  strategy (one device, exactly the numbers of a run without tf.distribute). mirrored: every local GPU
  (or the CPU). multiworker: `MultiWorkerMirroredStrategy`, the cluster read from `TF_CONFIG`; create it
  before other TensorFlow work in the process. one_device: the first GPU, else the CPU.
  """
  if isinstance(strategy, tf.distribute.Strategy):
    return strategy
  gpus = lambda: tf.config.list_logical_devices("GPU")  # not before a multi-worker strategy exists
  if strategy == "auto":
    return tf.distribute.MirroredStrategy() if gpus() else _DEFAULT
  if strategy == "mirrored":
    return tf.distribute.MirroredStrategy()
  if strategy == "multiworker":
    if not os.environ.get("TF_CONFIG"):
      raise ValueError("--strategy=multiworker needs TF_CONFIG, the cluster and this process's task (README: "
                       "'Several GPUs and hosts')")
    try:
      return tf.distribute.MultiWorkerMirroredStrategy()
    except RuntimeError as e:  # "Collective ops must be configured at program startup"
      raise RuntimeError("the multi-worker strategy must be created before TensorFlow runs anything in this "
                         "process: call distribute.get_strategy('multiworker') first") from e
  if strategy == "one_device":
    return tf.distribute.OneDeviceStrategy("/gpu:0" if gpus() else "/cpu:0")
  raise ValueError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")


def is_default(strategy) -> bool:
  """True for TensorFlow's default (no-op) strategy: the one-device code path, unchanged."""
  return strategy is None or strategy is _DEFAULT


def is_chief(strategy) -> bool:
  """Whether this process writes checkpoints, logs, summaries and results: always, except on the
  non-chief workers of a multi-worker cluster."""
  return bool(strategy.extended.should_checkpoint)


def worker_name(strategy) -> str:
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or resolver.task_type is None:
    return "chief"
  return f"{resolver.task_type}-{resolver.task_id}"


def num_workers(strategy) -> int:
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None:
    return 1
  spec = resolver.cluster_spec().as_dict()
  return sum(len(spec.get(kind, ())) for kind in ("chief", "worker")) or 1


def check_divisible(strategy, size: int, what: str):
  """The global batch must split into whole images / whole episodes, one equal share per replica."""
  replicas = strategy.num_replicas_in_sync
  if size % replicas:
    raise ValueError(f"{what} {size} does not split evenly over {replicas} replicas; use a multiple of "
                     f"{replicas} (it is the global batch: each replica takes {what} / {replicas})")


def synchronize_batch_norm(model):
  """Makes every Keras BatchNormalization in `model` normalise with the statistics of the global batch
  in training mode: Keras's own `synchronized=True`, whose TensorFlow backend all-reduces the sums of x
  and x^2 (and the counts) over the replicas. Inference is unaffected; on one replica it changes nothing.
  """
  for layer in model._flatten_layers(include_self=True, recursive=True):  # pylint: disable=protected-access
    if isinstance(layer, keras.layers.BatchNormalization):
      layer.synchronized = True


class StepInputs:
  """The per-replica inputs of training step s, through `distribute_datasets_from_function`.

  replica_inputs(step, replica, replicas) -> dict of tensors: replica `replica`'s share of step `step`'s
  global batch, for steps below `steps`, computed statelessly from the step so that resuming replays the
  same batches. The dataset walks the steps; a worker's pipeline yields one element per local replica and
  step, in replica order, and the distributed iterator hands them out round-robin (`check_replica`
  asserts it). Asking for a step other than the next one (a resume, a restore after divergence) starts a
  new iterator there.
  """

  def __init__(self, strategy, replica_inputs, steps: int):
    self.strategy = strategy
    self.replica_inputs = replica_inputs
    self.steps = steps
    self._iterator, self._next = None, None

  def _dataset(self, start):
    def dataset_fn(context):
      replicas = context.num_replicas_in_sync
      local = replicas // context.num_input_pipelines
      first = context.input_pipeline_id * local

      def element(i):
        step, replica = i // local, first + i % local
        return dict(self.replica_inputs(step, replica, replicas), replica=tf.cast(replica, tf.int32))

      return tf.data.Dataset.range(start * local, self.steps * local).map(element).prefetch(2 * local)
    return self.strategy.distribute_datasets_from_function(dataset_fn)

  @property
  def element_spec(self):
    """The (distributed) type spec of a step's batch: the input signature of a compiled step."""
    return self._dataset(0).element_spec

  def __call__(self, step: int):
    if self._next != step:
      self._iterator = iter(self._dataset(step))
    self._next = step + 1
    return next(self._iterator)


def check_replica(batch):
  """Inside a replica: asserts the batch was meant for this replica (guards the round-robin order). On one
  replica there is nothing to check, and `batch` need not carry "replica"."""
  context = tf.distribute.get_replica_context()
  if context.num_replicas_in_sync == 1:
    return tf.no_op()
  return tf.debugging.assert_equal(batch["replica"], tf.cast(context.replica_id_in_sync_group, tf.int32),
                                   message="a replica received another replica's share of the batch")


def replicas_in_sync() -> int:
  """R, the number of replicas, inside a replica function (1 under the default strategy)."""
  return tf.distribute.get_replica_context().num_replicas_in_sync


def all_sum(values):
  """Sums a nested structure of tensors over all replicas (None entries stay None); identity on one
  replica. Differentiable: the gradient of an all-sum is an all-sum."""
  context = tf.distribute.get_replica_context()
  if context.num_replicas_in_sync == 1:
    return values
  flat = tf.nest.flatten(values, expand_composites=False)
  present = [v for v in flat if v is not None]
  reduced = iter(context.all_reduce(tf.distribute.ReduceOp.SUM, present) if present else [])
  return tf.nest.pack_sequence_as(values, [None if v is None else next(reduced) for v in flat])


def all_gather(value):
  """Concatenates `value` [n, ...] of every replica along axis 0, in replica order: [R n, ...]. Its
  gradient sums every replica's upstream gradient and hands each replica its own rows."""
  context = tf.distribute.get_replica_context()
  if context.num_replicas_in_sync == 1:
    return value
  # The reshape hands the all-gather a dense gradient: a tf.gather of the result would send it
  # IndexedSlices, which the all-reduce in its gradient does not take.
  gathered = context.all_gather(value, axis=0)
  return tf.reshape(gathered, tf.shape(gathered))


def log_mean_exp(t):
  """log(mean(exp(t))) over every replica's t [n] together, without overflow (one replica: the local
  `logsumexp(t) - log(n)`). Each replica sends one number, its local logsumexp."""
  context = tf.distribute.get_replica_context()
  n = tf.cast(tf.size(t), t.dtype)
  if context.num_replicas_in_sync == 1:
    return tf.reduce_logsumexp(t) - tf.math.log(n)
  local = tf.reduce_logsumexp(t)[None]
  return tf.reduce_logsumexp(context.all_gather(local, axis=0)) - tf.math.log(
      n * context.num_replicas_in_sync)


def local_value(strategy, value):
  """A value that is identical on every replica (computed from all-reduced tensors), as one tensor."""
  return tf.nest.map_structure(lambda v: strategy.experimental_local_results(v)[0], value)


_UNSUPPORTED = ("clipnorm", "clipvalue", "global_clipnorm", "weight_decay", "use_ema",
                "gradient_accumulation_steps", "loss_scale_factor")


def apply_gradients(strategy, optimizer, grads, variables):
  """`optimizer.apply(grads, variables)` for gradients that are already summed over replicas, called in
  cross-replica context so that it may sit inside `tf.cond` (the divergence guard).

  Under the default strategy this is `optimizer.apply` itself. Under any other, Keras's `apply` cannot be
  used here: in replica context it all-reduces again and its merge_call may not sit under tf.cond, and in
  cross-replica context it fails. So each variable gets `optimizer.update_step` on every local copy via
  `strategy.extended.update`, as Keras's TensorFlow optimizer does after its own all-reduce, then the
  iteration counter advances. Options this skips (clipping, weight decay, EMA, accumulation, loss
  scaling) are refused.
  """
  if is_default(strategy):
    optimizer.apply(grads, variables)
    return
  used = [name for name in _UNSUPPORTED if getattr(optimizer, name, None)]
  if used:
    raise NotImplementedError(f"optimizer options {used} are not supported under a distribution strategy")
  learning_rate = optimizer.learning_rate

  def update(variable, gradient):
    return optimizer.update_step(gradient, variable, learning_rate)

  for gradient, variable in zip(grads, variables):
    if gradient is not None:
      strategy.extended.update(getattr(variable, "value", variable), update, args=(gradient,), group=False)
  optimizer.iterations.assign_add(1)


def check_workers_agree(strategy, value: int, what: str):
  """On a multi-worker cluster, fails on every worker when the workers hold different `value`s (e.g. a
  worker that cannot see the chief's checkpoints resumed from another step)."""
  if num_workers(strategy) == 1:
    return

  @tf.function
  def gather():
    return strategy.run(lambda: tf.distribute.get_replica_context().all_gather(
        tf.constant([float(value)], tf.float64), axis=0))

  values = sorted({float(v) for v in local_value(strategy, gather()).numpy()})
  if len(values) > 1:
    raise ValueError(f"the workers disagree on {what}: {values}; every worker must see the chief's "
                     "--output_dir (a shared file system) to resume")


class ScratchDir:
  """Where a non-chief worker writes what it must (its checkpoint copies, which TensorFlow's multi-worker
  guide has every worker save), removed on exit; the chief writes to the real directory."""

  def __init__(self, chief: bool, real_dir: str, name: str):
    self.chief, self.real_dir, self.name = chief, real_dir, name
    self.path = real_dir

  def __enter__(self):
    if not self.chief:
      self.path = tempfile.mkdtemp(prefix=f"fden-{self.name}-")
    return self.path

  def __exit__(self, *exc):
    if not self.chief:
      shutil.rmtree(self.path, ignore_errors=True)


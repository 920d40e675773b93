"""Server-side dynamic batching that never changes a result.

Concurrent requests for the same model version and signature, with inputs of
the same dtypes and trailing shapes, are merged along axis 0 and run once.
Variable-length inputs (axis 1 differs) are right-padded with the serving
contract's pad values, 0 for integer ids and "" for strings (TF Serving pads
with each tensor's first element, which the zoo's models would read as a
token). Outputs that carry the padded time axis are cut back to each
request's own length, so every caller gets what an unbatched run gives it.
When a merged run fails, each request is rerun alone, so one bad request
fails alone.

"Never changes a result" holds exactly for strings, ids and shapes; float
outputs can differ in the last bit or two, because TensorFlow's own kernels
round differently for different batch sizes (a zoo LSTM's logits for a row
run alone and the same row inside a batch of 6 differ by up to 2.4e-7, with
or without the server, with or without oneDNN).

    request A: token_ids (2, 3) ── pad to (2, 5) ──┐
                                                   ├─ concat (5, 5) ─ run ─ rows 0-1 ─ cut to 3 ─ A: logits (2, 3, V)
    request B: token_ids (3, 5) ───────────────────┘                      └─ rows 2-4 ─────────── B: logits (3, 5, V)
"""

import collections
import dataclasses
import logging
import os
import pathlib
import re
import threading
import time
from collections.abc import Callable

import grpc
import numpy as np
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2

from serving.protocol import errors
from serving.protocol.errors import ServingError

logger = logging.getLogger(__name__)

QUEUE_FULL_MESSAGE = "The batch scheduling queue to which this task was submitted is full"
_PADDABLE_TYPES = frozenset({
    types_pb2.DT_INT8, types_pb2.DT_INT16, types_pb2.DT_INT32, types_pb2.DT_INT64,
    types_pb2.DT_UINT8, types_pb2.DT_UINT16, types_pb2.DT_UINT32, types_pb2.DT_UINT64,
    types_pb2.DT_STRING,
})


# === Parameters (TF Serving's BatchingParameters text format) ===


@dataclasses.dataclass(frozen=True)
class BatchingParameters:
    """How requests are grouped; field names and meaning as TF Serving's.

    Attributes:
        max_batch_size: Most rows in one merged run.
        batch_timeout_micros: Longest wait for a batch to fill before it runs.
        max_enqueued_batches: Queue bound, in batches of `max_batch_size`
            rows, per model version, signature and input layout; beyond it
            requests are refused with UNAVAILABLE.
        num_batch_threads: Threads running merged batches.
    """

    max_batch_size: int = 32
    batch_timeout_micros: int = 1000
    max_enqueued_batches: int = 100
    num_batch_threads: int = dataclasses.field(default_factory=lambda: os.cpu_count() or 1)

    def __post_init__(self):
        for field in ("max_batch_size", "max_enqueued_batches", "num_batch_threads"):
            if getattr(self, field) < 1:
                raise ValueError(f"batching parameter {field} must be at least 1, got {getattr(self, field)}")
        if self.batch_timeout_micros < 0:
            raise ValueError(f"batch_timeout_micros must not be negative, got {self.batch_timeout_micros}")


_INTEGER_FIELDS = ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches", "num_batch_threads")
# Accepted so that a TF Serving batching file works here unchanged; they tune
# the C++ batcher's padding to fixed sizes and splitting, which this one does
# not need: it pads to the contract's values and runs any size up to the max.
_IGNORED_FIELDS = ("allowed_batch_sizes", "pad_variable_length_inputs", "enable_large_batch_splitting",
                   "max_execution_batch_size", "thread_pool_name", "num_batch_threads_per_queue",
                   "batch_padding_policy", "mixed_priority_batching_policy")
_FIELD_PATTERN = re.compile(
    r"(?P<name>[A-Za-z_]\w*)\s*(?:\{\s*value\s*:\s*(?P<wrapped>[^\s}]+)\s*\}|:\s*(?P<plain>\"[^\"]*\"|[^\s{}]+))")


def parse_batching_parameters(text: str) -> BatchingParameters:
    """Parses TF Serving's BatchingParameters text format.

    The TF Serving protos for these parameters are not part of the serving
    API package, so this reads the format directly. Both
    `max_batch_size { value: 32 }` (TF Serving's wrapper fields) and
    `max_batch_size: 32` are accepted; `#` starts a comment.

    Raises:
        ValueError: For an unknown field, a bad value, or unparsable text.
    """
    text = re.sub(r"#[^\n]*", "", text)
    values: dict[str, int] = {}
    position = 0
    for match in _FIELD_PATTERN.finditer(text):
        if text[position:match.start()].strip():
            raise ValueError(f"cannot parse batching parameters near {text[position:match.start()].strip()!r}")
        position = match.end()
        name = match.group("name")
        raw = match.group("wrapped") or match.group("plain")
        if name in _IGNORED_FIELDS:
            logger.info("Batching parameter %s is accepted for compatibility and has no effect here", name)
            continue
        if name not in _INTEGER_FIELDS:
            raise ValueError(f"unknown batching parameter {name!r}; expected one of {', '.join(_INTEGER_FIELDS)}")
        try:
            values[name] = int(raw)
        except ValueError:
            raise ValueError(f"batching parameter {name} needs an integer, got {raw!r}") from None
    if text[position:].strip():
        raise ValueError(f"cannot parse batching parameters near {text[position:].strip()!r}")
    return BatchingParameters(**values)


def read_batching_parameters_file(path: os.PathLike) -> BatchingParameters:
    """Reads `--batching_parameters_file`; see `parse_batching_parameters`."""
    return parse_batching_parameters(pathlib.Path(path).read_text())


# === What a signature allows ===


def _dims(tensor_info: meta_graph_pb2.TensorInfo) -> list[int] | None:
    if tensor_info.tensor_shape.unknown_rank:
        return None
    return [dim.size for dim in tensor_info.tensor_shape.dim]


@dataclasses.dataclass(frozen=True)
class SignatureBatchingPlan:
    """Which inputs a signature lets the batcher pad, and which outputs to cut back.

    Attributes:
        batchable: Whether requests for this signature may be merged at all:
            every input and output has a known rank >= 1 and a free batch axis.
        paddable_inputs: Integer or string inputs of rank >= 2 whose axis 1 is
            free: the contract's token inputs, padded with 0 / "".
        time_axis_outputs: Outputs of rank >= 2 whose axis 1 is free: they
            follow the padded length and are cut back per request.
    """

    batchable: bool
    paddable_inputs: frozenset = frozenset()
    time_axis_outputs: frozenset = frozenset()

    @classmethod
    def from_signature_def(cls, signature: meta_graph_pb2.SignatureDef) -> "SignatureBatchingPlan":
        paddable, time_axis = set(), set()
        for tensors, collect in ((signature.inputs, paddable), (signature.outputs, time_axis)):
            for alias, tensor_info in tensors.items():
                dims = _dims(tensor_info)
                if not dims or dims[0] >= 0:  # unknown rank, scalar, or fixed batch size
                    return cls(batchable=False)
                if len(dims) >= 2 and dims[1] < 0:
                    collect.add(alias)
        paddable = {alias for alias in paddable if signature.inputs[alias].dtype in _PADDABLE_TYPES}
        return cls(True, frozenset(paddable), frozenset(time_axis))


# === Merging and splitting ===


CLIENT_GONE_MESSAGE = "The client cancelled the request or went away before its batch ran; nothing was run"


@dataclasses.dataclass(eq=False)
class _Task:
    inputs: dict
    rows: int
    length: int | None  # axis-1 length of the padded inputs, None when there are none
    enqueued: float = 0.0
    client: object = None  # the gRPC context: is_active(), add_callback(); None when unknown (REST)
    done: threading.Event = dataclasses.field(default_factory=threading.Event)
    outputs: dict | None = None
    error: ServingError | None = None

    def finish(self, outputs: dict | None = None, error: ServingError | None = None) -> None:
        self.outputs, self.error = outputs, error
        self.done.set()


def _layout(inputs: dict, plan: SignatureBatchingPlan):
    """Returns (rows, length, compatibility key), or None when a request cannot be merged.

    Requests merge only when every input has the same dtype and the same
    shape past the batch axis, except axis 1 of paddable inputs.
    """
    if not inputs or any(array.ndim == 0 for array in inputs.values()):
        return None
    rows = {array.shape[0] for array in inputs.values()}
    lengths = {array.shape[1] for alias, array in inputs.items() if alias in plan.paddable_inputs}
    if len(rows) != 1 or len(lengths) > 1:
        return None  # inconsistent within the request: let it run (and fail) alone
    key = tuple(sorted(
        (alias, array.dtype.str, array.ndim,
         array.shape[2:] if alias in plan.paddable_inputs else array.shape[1:])
        for alias, array in inputs.items()))
    return rows.pop(), (lengths.pop() if lengths else None), key


def pad_axis_1(array: np.ndarray, length: int) -> np.ndarray:
    """Right-pads axis 1 to `length` with the pad value of the dtype: "", 0 or False."""
    if array.shape[1] == length:
        return array
    pad = b"" if array.dtype == object else np.zeros((), array.dtype)
    padded = np.full((array.shape[0], length) + array.shape[2:], pad, dtype=array.dtype)
    padded[:, :array.shape[1]] = array
    return padded


def merge_inputs(tasks: list, plan: SignatureBatchingPlan) -> tuple[dict, int | None]:
    """Concatenates the tasks' inputs on axis 0, right-padding axis 1 of paddable inputs.

    Returns:
        The merged inputs and the padded length (None when nothing was padded).
    """
    lengths = [task.length for task in tasks if task.length is not None]
    padded_length = max(lengths) if lengths else None
    merged = {}
    for alias in tasks[0].inputs:
        parts = [task.inputs[alias] for task in tasks]
        if alias in plan.paddable_inputs:
            parts = [pad_axis_1(part, padded_length) for part in parts]
        merged[alias] = np.concatenate(parts, axis=0)
    return merged, padded_length


def _trailing_used_length(parts: list[np.ndarray]) -> int:
    """Axis-1 length up to the last position where any of the arrays holds a non-pad value."""
    used = 0
    for part in parts:
        if part.shape[1] == 0:
            continue
        nonpad = part != (b"" if part.dtype == object else 0)
        columns = np.flatnonzero(nonpad.reshape(part.shape[0], part.shape[1], -1).any(axis=(0, 2)))
        if columns.size:
            used = max(used, int(columns[-1]) + 1)
    return used


def split_outputs(outputs: dict, tasks: list, plan: SignatureBatchingPlan,
                  padded_length: int | None) -> list[dict]:
    """Gives each task its rows of the merged outputs, with time axes cut back.

    With padded inputs, time-axis outputs as long as the padded length are cut
    to the task's own length, after checking that what is cut is padding. Without padded inputs (text in, tokens out),
    the model's own padding to the longest row in the batch is removed by
    cutting trailing columns that hold only pad values in every time-axis
    output of the task's rows (the contract puts real values at every real
    position, so the longest row of a task keeps its last column).

    Raises:
        ServingError: INTERNAL when the outputs do not have one row per input
            row, or time axes disagree; the caller then runs tasks alone.
    """
    total_rows = sum(task.rows for task in tasks)
    for alias, output in outputs.items():
        if output.ndim == 0 or output.shape[0] != total_rows:
            raise errors.internal(f"batched output {alias} has shape {output.shape}, expected {total_rows} rows")
    time_axis = [alias for alias in plan.time_axis_outputs if alias in outputs and outputs[alias].ndim >= 2]
    if padded_length is None and len({outputs[alias].shape[1] for alias in time_axis}) > 1:
        raise errors.internal("time-axis outputs of different lengths cannot be cut back safely")
    results, offset = [], 0
    for task in tasks:
        part = {alias: output[offset:offset + task.rows] for alias, output in outputs.items()}
        offset += task.rows
        if padded_length is not None:
            for alias in time_axis:
                if part[alias].shape[1] == padded_length and task.length != padded_length:
                    # Past a task's own length every row is padding, by the contract. If
                    # not, this output's axis 1 was not the time axis (a vocabulary of the
                    # same size, say): give up on merging rather than cut real values.
                    if _trailing_used_length([part[alias]]) > task.length:
                        raise errors.internal(f"output {alias} has values past the padded time axis")
                    part[alias] = part[alias][:, :task.length]
        elif time_axis:
            used = _trailing_used_length([part[alias] for alias in time_axis])
            for alias in time_axis:
                part[alias] = part[alias][:, :used]
        results.append({alias: np.ascontiguousarray(array) for alias, array in part.items()})
    return results


# === The scheduler ===


class _Queue:
    def __init__(self, run_function: Callable[[dict], dict], plan: SignatureBatchingPlan, metric_labels: tuple):
        self.run_function = run_function
        self.plan = plan
        self.metric_labels = metric_labels
        self.tasks: collections.deque[_Task] = collections.deque()
        self.pending_rows = 0


class BatchScheduler:
    """Groups compatible concurrent requests and runs them as one batch.

    One queue per (model, version, signature, input layout); a pool of
    `num_batch_threads` threads takes the queue whose oldest request has
    waited longest, once it holds `max_batch_size` rows or its oldest request
    has waited `batch_timeout_micros`.

    Args:
        parameters: The BatchingParameters.
        metrics: Optional ServingMetrics (batch-size histogram).
    """

    def __init__(self, parameters: BatchingParameters, metrics=None):
        self.parameters = parameters
        self._metrics = metrics
        self._timeout_seconds = parameters.batch_timeout_micros / 1e6
        self._capacity_rows = parameters.max_batch_size * parameters.max_enqueued_batches
        self._condition = threading.Condition()
        self._queues: dict[tuple, _Queue] = {}
        self._closed = False
        self._draining = False  # shutting down: run what is queued now, without waiting to fill batches
        self._threads = [threading.Thread(target=self._work, name=f"batch-{index}", daemon=True)
                         for index in range(parameters.num_batch_threads)]
        for thread in self._threads:
            thread.start()

    def run(self, queue_key: tuple, inputs: dict, plan: SignatureBatchingPlan,
            run_function: Callable[[dict], dict], timeout_seconds: float | None = None,
            metric_labels: tuple = ("", ""), client=None) -> dict:
        """Runs a request, merged with others when it can be.

        Args:
            queue_key: Identifies the model version and signature.
            inputs: Checked numpy inputs.
            plan: The signature's SignatureBatchingPlan.
            run_function: Runs the signature on (merged) inputs.
            timeout_seconds: The caller's deadline, None for none.
            metric_labels: (model, signature) for the batch-size histogram.
            client: The gRPC context, or None. A request whose client cancels
                or goes away leaves the queue at once (its callback), and is
                dropped from a batch that is about to run (`is_active()`).

        Raises:
            ServingError: UNAVAILABLE when the queue is full or the server is
                stopping, DEADLINE_EXCEEDED, CANCELLED, or the model's own error.
        """
        layout = _layout(inputs, plan) if plan.batchable else None
        if layout is None or layout[0] == 0 or layout[0] > self.parameters.max_batch_size:
            return run_function(inputs)  # cannot merge: run alone, exactly as unbatched
        rows, length, input_key = layout
        task = _Task(inputs, rows, length, enqueued=time.monotonic(), client=client)
        key = (queue_key, input_key)
        with self._condition:
            if self._closed:
                raise ServingError(grpc.StatusCode.UNAVAILABLE, "The server is shutting down")
            queue = self._queues.get(key)
            if queue is None:
                queue = self._queues[key] = _Queue(run_function, plan, metric_labels)
            if queue.pending_rows + rows > self._capacity_rows:
                raise ServingError(grpc.StatusCode.UNAVAILABLE, QUEUE_FULL_MESSAGE)
            was_empty = not queue.tasks
            queue.tasks.append(task)
            queue.pending_rows += rows
            self._queued_changed()
            # Wake a batch thread only when this task changes what it would do: a new
            # queue to time (its oldest task is this one) or a batch now full. A task
            # joining a queue that is already timed changes nothing: a waiting thread
            # wakes at that queue's deadline anyway, and a busy one looks again when
            # it is done. Waking one per request cost a thread switch per request
            # under load, for nothing.
            if was_empty or queue.pending_rows >= self.parameters.max_batch_size or self._draining:
                self._condition.notify()
        if client is not None:  # runs when the RPC ends, however: a cancelled client's task leaves now
            client.add_callback(lambda: self._withdraw(queue, task, ServingError(
                grpc.StatusCode.CANCELLED, CLIENT_GONE_MESSAGE)))
        if not task.done.wait(timeout_seconds):
            self._withdraw(queue, task)
            if not task.done.is_set():
                raise ServingError(grpc.StatusCode.DEADLINE_EXCEEDED,
                                   "Deadline exceeded while waiting in the batch queue")
        if task.error is not None:
            raise task.error
        return task.outputs

    def _withdraw(self, queue: _Queue, task: _Task, error: ServingError | None = None) -> None:
        """Takes a task out of its queue if it has not started; finishes it with `error` if given."""
        with self._condition:
            if task not in queue.tasks:
                return  # running or done
            queue.tasks.remove(task)
            queue.pending_rows -= task.rows
            self._queued_changed()
        if error is not None:
            task.finish(error=error)

    def queued_requests(self) -> int:
        """Requests waiting in the queues, not yet running."""
        with self._condition:
            return self._count_queued()

    def _count_queued(self) -> int:
        return sum(len(queue.tasks) for queue in self._queues.values())

    def _queued_changed(self) -> None:
        """Under the lock: publishes the number of waiting requests."""
        if self._metrics is not None:
            self._metrics.set_queued_requests(self._count_queued())

    def drain(self) -> None:
        """Runs queued requests at once instead of waiting for their batch to fill (server shutdown).

        Requests still arriving are accepted and run without waiting too; `close`
        then refuses new ones.
        """
        with self._condition:
            self._draining = True
            self._condition.notify_all()

    def close(self, timeout_seconds: float = 30.0) -> None:
        """Runs what is queued, then stops the threads (new requests get UNAVAILABLE)."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()
        for thread in self._threads:
            thread.join(timeout_seconds)

    def _next_batch(self):
        """Under the lock: a ready (queue, tasks) pair, or the seconds to wait for one."""
        now = time.monotonic()
        oldest_ready, wait = None, None
        for key, queue in self._queues.items():
            if not queue.tasks:
                continue
            oldest = queue.tasks[0].enqueued
            run_now = self._closed or self._draining or queue.pending_rows >= self.parameters.max_batch_size
            ready_at = now if run_now else oldest + self._timeout_seconds
            if ready_at <= now:
                if oldest_ready is None or oldest < oldest_ready[1]:
                    oldest_ready = (key, oldest)
            else:
                wait = ready_at - now if wait is None else min(wait, ready_at - now)
        if oldest_ready is None:
            return None, wait
        key = oldest_ready[0]
        queue = self._queues[key]
        tasks, rows = [], 0
        while queue.tasks and rows + queue.tasks[0].rows <= self.parameters.max_batch_size:
            task = queue.tasks.popleft()
            tasks.append(task)
            rows += task.rows
        queue.pending_rows -= rows
        if not queue.tasks:
            del self._queues[key]  # drops the reference to an old version's servable
        else:
            self._condition.notify()  # what is left is another thread's to time (see `run`)
        self._queued_changed()
        return (queue, tasks), None

    def _work(self) -> None:
        while True:
            with self._condition:
                while True:
                    batch, wait = self._next_batch()
                    if batch is not None:
                        break
                    if self._closed and not self._queues:
                        return
                    self._condition.wait(wait)
            self._execute(*batch)

    def _execute(self, queue: _Queue, tasks: list) -> None:
        gone = [task for task in tasks if task.client is not None and not task.client.is_active()]
        for task in gone:
            task.finish(error=ServingError(grpc.StatusCode.CANCELLED, CLIENT_GONE_MESSAGE))
        tasks = [task for task in tasks if task not in gone]
        if not tasks:
            return
        if self._metrics is not None:
            self._metrics.observe_batch(*queue.metric_labels, sum(task.rows for task in tasks), len(tasks))
        if len(tasks) > 1:
            try:
                merged, padded_length = merge_inputs(tasks, queue.plan)
                results = split_outputs(queue.run_function(merged), tasks, queue.plan, padded_length)
            except Exception as error:  # rerun alone so only a bad request fails
                logger.debug("Merged batch of %d requests failed (%s); running them one by one",
                             len(tasks), errors.from_exception(error))
            else:
                for task, outputs in zip(tasks, results):
                    task.finish(outputs)
                return
        for task in tasks:
            try:
                task.finish(queue.run_function(task.inputs))
            except Exception as error:
                task.finish(error=errors.from_exception(error))

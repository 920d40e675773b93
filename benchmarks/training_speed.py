"""Training speed: the zoo's own training path against PyTorch's word_language_model, side by side.

The zoo side is what `rnn-zoo-train` runs for a preset: `training.run.resolve_config`,
`load_data`, `build_model`, `compile_for_training` (for a language model the
`CarriedStateTrainer` with SGD and global-norm clipping), `make_datasets`
(`lm_dataset`'s truncated-BPTT windows) and `fit`. The PyTorch side is the
pytorch/examples word_language_model recipe (`pytorch_word_language_model.py`)
built from the config the zoo side resolved, so both train the same shapes on
the same token stream:

    small   Zaremba small (ptb_small):  2 x 200, batch 20, 20 steps, no dropout
    medium  Zaremba medium (ptb_medium): 2 x 650, batch 20, 35 steps, dropout 0.5

each with the cell lstm, gru or simple_rnn, on a seeded Zipf-like stream over a
10,000-word vocabulary (or `--data ../shared/data/ptb`, the real PTB train file).
It also estimates seconds per training epoch of the sst_bilstm classifier and
the ewt_bilstm tagger on synthetic corpora of the real train sizes.

Method. Every side runs in its own process (this script with `--worker`),
which builds its model, trains `--warmup` steps (tracing, first-touch memory:
excluded), then waits. The sides of one (shape, cell) pair then take turns,
A B A B, for `--rounds` rounds, each round timing `--steps` training steps
(after one untimed step: for the zoo each round is one fit() call, and its
first step opens the dataset iterator, once per epoch in real training). The
report gives each side's median tokens per second over the rounds with the
min-max spread, and the zoo/PyTorch ratio of the medians. `--variants` adds
zoo columns that differ only in their environment (say oneDNN on and off) to
the same rotation; `--env` sets variables for every zoo worker. The machine is
meant to be otherwise idle: each round waits for other processes to go quiet,
and a round during which they took more than `--max_other_cpu` of the CPUs is
run again (on 2 cores, PyTorch's OpenMP threads ran up to ten times slower
beside another busy process, TensorFlow's about 1.3 times).

    python benchmarks/training_speed.py                                 # everything: about 20 min on 2 cores
    python benchmarks/training_speed.py --variants default onednn=TF_ENABLE_ONEDNN_OPTS=1
    python benchmarks/training_speed.py --variants default bf16=RNN_ZOO_BENCHMARK_PRECISION=mixed_bfloat16
    python benchmarks/training_speed.py --shapes small --cells lstm --rounds 5
    python benchmarks/training_speed.py --quick                         # a smoke run in well under a minute

PyTorch is not a dependency of the project: without it, the PyTorch columns
are left empty (install it with `.venv/bin/pip install torch==2.13.0`).

Outputs (under --output_dir, default benchmarks/results/; a new temporary
directory for --quick): training_speed.json, training_speed.md and
training_speed.png.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

logger = logging.getLogger("training_speed")

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT_DIR = REPOSITORY_ROOT / "benchmarks" / "results"
PYTORCH_INSTALL_HINT = ".venv/bin/pip install torch==2.13.0   (a CPU wheel on the project's machines)"
PYTORCH = "pytorch"
# Lines of a worker's stdout that carry a record start with this; anything else
# a library prints there is ignored.
RECORD_MARKER = "@@training_speed "
# How many times a round disturbed by other processes is run again.
ROUND_RETRIES = 3
MIN_MEASURED_SECONDS = 0.4
# A zoo variant's environment may set the run's --precision through this
# variable: --variants default bf16=RNN_ZOO_BENCHMARK_PRECISION=mixed_bfloat16
PRECISION_VARIABLE = "RNN_ZOO_BENCHMARK_PRECISION"

# === Shapes, corpora, the machine ===

CELLS = ("lstm", "gru", "simple_rnn")
LANGUAGE_MODEL_SHAPES = {
    "small": {"preset": "ptb_small", "title": "Zaremba small", "vocabulary_size": 10_000},
    "medium": {"preset": "ptb_medium", "title": "Zaremba medium", "vocabulary_size": 10_000},
    # A smoke-test size for --quick and the tests; still the ptb_small recipe.
    "tiny": {"preset": "ptb_small", "title": "tiny (smoke test)", "vocabulary_size": 200,
             "model": {"embedding_dim": 16, "hidden_dim": 16, "num_layers": 1},
             "training": {"batch_size": 4, "num_steps": 5}},
}
# Synthetic language-model stream length (PTB train has 929k tokens; the
# stream wraps around, so its length only has to beat a round's windows).
STREAM_TOKENS = {"small": 200_000, "medium": 200_000, "tiny": 2_000}
# The real train splits, measured once on ../shared/data (GLUE SST-2 train
# phrases; UD English EWT train, UPOS): size, words per sentence (mean, standard
# deviation, maximum) and the vocabulary size the train split gives.
EPOCH_CORPORA = {
    "sst_bilstm": {"task": "classifier", "corpus": "SST-2 GLUE train", "sentences": 67_349,
                   "mean_length": 9.41, "length_std": 8.07, "max_length": 52,
                   "vocabulary_size": 14_819, "classes": 2},
    "ewt_bilstm": {"task": "tagger", "corpus": "UD EWT train", "sentences": 12_544,
                   "mean_length": 16.31, "length_std": 12.40, "max_length": 159,
                   "vocabulary_size": 19_676, "tags": 17},
}
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")
THREAD_VARIABLES = ("TF_ENABLE_ONEDNN_OPTS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS",
                    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                    "OPENBLAS_CORETYPE", "KMP_AFFINITY", "KMP_BLOCKTIME")


def machine_info() -> dict:
    """The CPU (model, core count, the vector and matrix flags that decide kernels) and the OS."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    fields = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    lscpu = {}
    try:
        output = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in output.splitlines():
            key, _, value = line.partition(":")
            lscpu[key.strip()] = value.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    flags = set((lscpu.get("Flags") or fields.get("flags", "")).split())
    return {
        "cpu_model": lscpu.get("Model name") or fields.get("model name"),
        "cpu_family_model": f"family {lscpu.get('CPU family', '?')}, model {lscpu.get('Model', '?')}",
        "vendor": lscpu.get("Vendor ID") or fields.get("vendor_id"),
        "hypervisor": lscpu.get("Hypervisor vendor"),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cores_per_socket": lscpu.get("Core(s) per socket"),
        "sockets": lscpu.get("Socket(s)"),
        "threads_per_core": lscpu.get("Thread(s) per core"),
        "flags": {flag: flag in flags for flag in CPU_FLAGS},
        "all_flags": " ".join(sorted(flags)),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "environment": {name: os.environ.get(name) for name in THREAD_VARIABLES},
    }


# === Data ===


def zipf_ranks(rng: np.random.Generator, count: int, size: int) -> np.ndarray:
    """`count` ranks in [0, size) drawn with P(rank r) proportional to 1 / (r + 1), as words are."""
    weights = 1.0 / np.arange(1, size + 1)
    return rng.choice(size, size=count, p=weights / weights.sum())


def synthetic_stream(vocabulary_size: int, length: int, seed: int) -> list[str]:
    """A seeded Zipf-like word stream whose vocabulary (with `<pad>` and `<unk>`) has `vocabulary_size` entries.

    Every word appears at least once, at the start, so the vocabulary built
    from the stream is exactly that size.
    """
    rng = np.random.default_rng(seed)
    words = vocabulary_size - 2  # <pad> and <unk> are the vocabulary's own two
    ranks = np.concatenate([rng.permutation(words), zipf_ranks(rng, max(length - words, 0), words)])
    return [f"w{rank}" for rank in ranks]


def write_corpus(path: Path, tokens: list[str]) -> Path:
    """The token stream as one space-separated line, what the workers read."""
    path.write_text(" ".join(tokens) + "\n", encoding="utf-8")
    return path


def read_corpus(path: str | Path) -> list[str]:
    return Path(path).read_text(encoding="utf-8").split()


def ptb_tokens(data: str) -> list[str]:
    """The train split of a real corpus, read by the zoo's own loader (words plus <eos> per line)."""
    from training.datasets import load_split

    return list(load_split("language_model", data, "train").tokens)


def synthetic_sentences(rng: np.random.Generator, corpus: dict, count: int) -> list[list[str]]:
    """`count` sentences whose lengths follow a gamma fit of the real corpus, words Zipf-like."""
    mean, std = corpus["mean_length"], corpus["length_std"]
    shape = (mean / std) ** 2
    lengths = np.clip(np.rint(rng.gamma(shape, std ** 2 / mean, size=count)), 1, corpus["max_length"])
    lengths = lengths.astype(int)
    words = zipf_ranks(rng, int(lengths.sum()), corpus["vocabulary_size"] - 2)
    cuts = np.cumsum(lengths)[:-1]
    return [[f"w{rank}" for rank in sentence] for sentence in np.split(words, cuts)]


def synthetic_splits(preset: str, seed: int, dev_size: int = 64):
    """Train and dev records of an EPOCH_CORPORA preset: the real train size, random labels or tags."""
    from training.datasets.records import ClassificationData, TaggingData

    corpus = EPOCH_CORPORA[preset]
    rng = np.random.default_rng(seed)
    splits = []
    for size in (corpus["sentences"], dev_size):
        sentences = synthetic_sentences(rng, corpus, size)
        source = f"synthetic {corpus['corpus']} ({size} sentences)"
        if corpus["task"] == "classifier":
            labels = rng.integers(0, corpus["classes"], size=size).tolist()
            splits.append(ClassificationData(sentences, labels, ["negative", "positive"], source))
        else:
            tags = [[f"TAG{tag}" for tag in rng.integers(0, corpus["tags"], size=len(sentence))]
                    for sentence in sentences]
            splits.append(TaggingData(sentences, tags, source))
    return tuple(splits)


def language_model_splits(corpus_path: str):
    """The stream as the train split; dev (built by make_datasets, never run) is its last tenth."""
    from training.datasets.records import LanguageModelData

    tokens = read_corpus(corpus_path)
    return (LanguageModelData(tokens, "word", str(corpus_path)),
            LanguageModelData(tokens[-(len(tokens) // 10):], "word", str(corpus_path)))


# === The worker sides ===


class ZooSide:
    """The zoo's training path for one preset, as rnn-zoo-train builds it, warmed up.

    A spec names the job ("language_model": a preset with a cell, trained on
    `corpus`; "epoch": an EPOCH_CORPORA preset on its synthetic corpus) and the
    preset's overrides.
    """

    def __init__(self, spec: dict):
        import keras

        from training.precision import dtype_policy, resolve_precision
        from training.run import build_model, compile_for_training, load_data, make_datasets, resolve_config

        self.job = spec["job"]
        training = dict(spec.get("training") or {})
        if os.environ.get(PRECISION_VARIABLE):
            training["precision"] = os.environ[PRECISION_VARIABLE]
        # Nothing is written: output_dir stays the unused default.
        self.config = resolve_config(
            preset=spec["preset"], cell=spec.get("cell"), model=spec.get("model"),
            training=training, data={"source": spec.get("corpus") or "synthetic"},
            seed=spec.get("seed", 0))
        self.precision = resolve_precision(self.config["training"].get("precision", "float32"))
        keras.utils.set_random_seed(self.config["seed"])
        if self.job == "language_model":
            splits = language_model_splits(spec["corpus"])
        else:
            splits = synthetic_splits(spec["preset"], spec.get("seed", 0))
        prepared = load_data(self.config, splits=splits)
        with dtype_policy(self.precision):  # as training.run trains
            model = build_model(self.config, prepared)
            self.trainable = compile_for_training(model, self.config)
        train_data, _ = make_datasets(self.config, prepared)
        self.train_data = train_data.repeat()  # rounds never run out of batches
        self.vocabulary_size = len(prepared.vocabulary)
        self.parameters = int(model.count_params())
        self.train_size = len(prepared.train)
        self._timer = _step_timer(keras)

    def train(self, steps: int) -> tuple[float, float]:
        """Seconds for `steps` training steps of one fit() call; the mean loss.

        The call runs one step more, untimed, first: it opens the dataset
        iterator, which fit() does once per epoch and which for the shuffled
        classifier and tagger data fills a corpus-sized shuffle buffer.
        """
        history = self.trainable.fit(self.train_data, epochs=1, steps_per_epoch=steps + 1, verbose=0,
                                     shuffle=False, callbacks=[self._timer])
        return self._timer.seconds, float(history.history["loss"][-1])

    def describe(self) -> dict:
        import keras
        import tensorflow as tf

        training = self.config["training"]
        info = {
            "side": "zoo",
            "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
            "onednn_enabled": _tensorflow_onednn_enabled(),
            "precision": self.precision,
            "threads": {"tf_intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                        "tf_inter_op": tf.config.threading.get_inter_op_parallelism_threads()},
            "environment": {name: os.environ.get(name) for name in THREAD_VARIABLES},
            "config": {key: self.config[key] for key in ("task", "preset", "cell", "model", "training")},
            "vocabulary_size": self.vocabulary_size,
            "parameters": self.parameters,
            "batch_size": training["batch_size"],
        }
        if self.job == "language_model":
            info["num_steps"] = training["num_steps"]
        else:
            info["train_size"] = self.train_size
            info["batches_per_epoch"] = math.ceil(self.train_size / training["batch_size"])
        return info


def _step_timer(keras):
    """A callback timing a fit() call from the end of its first batch to the end of its last."""

    class StepTimer(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 0:
                self.started = time.perf_counter()
            self.seconds = time.perf_counter() - self.started

    return StepTimer()


def _tensorflow_onednn_enabled() -> bool | None:
    """Whether TensorFlow's oneDNN custom ops are on in this process (None if it cannot tell)."""
    try:
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:
        return None
    return bool(_pywrap_util_port.IsMklEnabled())


class PyTorchSide:
    """The word_language_model recipe on the zoo side's resolved config and the same stream."""

    def __init__(self, spec: dict):
        import torch

        from pytorch_word_language_model import LanguageModelTrainer, RNNModel, batchify
        from training.vocab import Vocabulary  # plain Python: no TensorFlow in this process

        self.job = spec["job"]
        if self.job != "language_model":
            raise ValueError(f"The PyTorch side only trains language models, not {self.job!r}.")
        torch.manual_seed(spec.get("seed", 0))
        config = spec["config"]
        model_options, training = config["model"], config["training"]
        tokens = read_corpus(spec["corpus"])
        vocabulary = Vocabulary.build([tokens])  # as training.run.load_data builds it
        model = RNNModel(config["cell"], len(vocabulary), model_options["embedding_dim"],
                         model_options["hidden_dim"], model_options["num_layers"],
                         model_options.get("dropout", 0.0), model_options.get("init_scale"))
        self.trainer = LanguageModelTrainer(
            model, batchify(vocabulary.encode(tokens), training["batch_size"]), training["num_steps"],
            training["learning_rate"], training.get("clip_norm"), training.get("sum_loss_over_time", False))
        self.config = config
        self.vocabulary_size = len(vocabulary)
        self.parameters = sum(parameter.numel() for parameter in model.parameters())

    def train(self, steps: int) -> tuple[float, float]:
        """Seconds for `steps` training steps; the mean loss per token."""
        started = time.perf_counter()
        losses = [self.trainer.step() for _ in range(steps)]
        return time.perf_counter() - started, float(np.mean(losses))

    def describe(self) -> dict:
        import torch

        return {
            "side": PYTORCH,
            "versions": {"torch": torch.__version__},
            "threads": {"torch_intra_op": torch.get_num_threads(),
                        "torch_inter_op": torch.get_num_interop_threads()},
            "mkldnn_available": torch.backends.mkldnn.is_available(),
            "environment": {name: os.environ.get(name) for name in THREAD_VARIABLES},
            "config": self.config,
            "vocabulary_size": self.vocabulary_size,
            "parameters": int(self.parameters),
            "batch_size": self.config["training"]["batch_size"],
            "num_steps": self.config["training"]["num_steps"],
        }


SIDES = {"zoo": ZooSide, PYTORCH: PyTorchSide}


def round_record(info: dict, steps: int, seconds: float, loss: float) -> dict:
    """One round's timing: tokens per second (language models) or seconds per epoch (the rest)."""
    record = {"steps": steps, "seconds": seconds, "loss": loss}
    if "num_steps" in info:
        tokens = steps * info["batch_size"] * info["num_steps"]
        record.update(tokens=tokens, tokens_per_second=tokens / seconds)
    else:
        record.update(seconds_per_batch=seconds / steps,
                      seconds_per_epoch=seconds / steps * info["batches_per_epoch"])
    return record


def run_worker(spec: dict, requests: Iterable, emit: Callable[[dict], None]) -> None:
    """Builds a side, warms it up, reports it ready, then times `spec["steps"]` steps per request.

    Args:
        spec: {"side": "zoo" | "pytorch", "job": "language_model" | "epoch",
            "preset", "cell", "model", "training" (overrides), "corpus" (a
            token file, language models), "config" (the PyTorch side: the zoo
            side's resolved config), "steps", "warmup", "seed"}.
        requests: One item per round to time (a worker process reads lines
            from stdin, so the parent decides when each round starts).
        emit: Receives {"ready": info} first, then one round record per request.
    """
    if spec["side"] not in SIDES:
        raise ValueError(f"Unknown side {spec['side']!r}. Valid sides: {', '.join(SIDES)}.")
    side = SIDES[spec["side"]](spec)
    warmup_seconds, _ = side.train(spec["warmup"])
    info = side.describe()
    info.update(warmup_steps=spec["warmup"], warmup_seconds=warmup_seconds)
    emit({"ready": info})
    for _ in requests:
        emit(round_record(info, spec["steps"], *side.train(spec["steps"])))


def _worker_main(spec_json: str) -> int:
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    spec = json.loads(spec_json)
    if spec["side"] == "zoo":
        from training.quiet import prefer_onednn

        prefer_onednn()  # as rnn-zoo-train does

    def emit(record):
        sys.stdout.write(RECORD_MARKER + json.dumps(record) + "\n")
        sys.stdout.flush()

    run_worker(spec, iter(sys.stdin.readline, ""), emit)
    return 0


# === Running the workers from the parent ===


class WorkerProcess:
    """One `--worker` subprocess: started and warmed up on creation, then a round per `time_round()`."""

    def __init__(self, name: str, spec: dict, environment: dict, log_dir: Path):
        self.name = name
        self.log_path = log_dir / f"{name.replace(' ', '_')}_{len(list(log_dir.iterdir()))}.log"
        self._log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True,
            env=environment, cwd=REPOSITORY_ROOT)
        self.ready = self._read()["ready"]

    def time_round(self) -> dict:
        self.process.stdin.write("time\n")
        self.process.stdin.flush()
        return self._read()

    def _read(self) -> dict:
        while True:
            line = self.process.stdout.readline()
            if not line:
                self.process.wait()
                self._log.flush()
                tail = self.log_path.read_text()[-3000:]
                raise RuntimeError(f"worker {self.name!r} exited ({self.process.returncode}); "
                                   f"the end of its log {self.log_path}:\n{tail}")
            if line.startswith(RECORD_MARKER):
                return json.loads(line[len(RECORD_MARKER):])

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def worker_environment(extra: dict) -> dict:
    """The parent's environment, TensorFlow's C++ log quieter, the checkout importable, plus `extra`."""
    environment = dict(os.environ)
    environment.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    environment.setdefault("KERAS_BACKEND", "tensorflow")
    paths = [str(REPOSITORY_ROOT)] + [p for p in environment.get("PYTHONPATH", "").split(os.pathsep) if p]
    environment["PYTHONPATH"] = os.pathsep.join(paths)
    environment.update(extra)
    return environment


def cpu_times(pid: int | None = None) -> tuple[int, int, int] | None:
    """Busy and total CPU ticks of the whole machine, and the ticks process `pid` used (Linux /proc).

    None where /proc cannot be read (another OS): contention is then not measured.
    """
    try:
        ticks = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        own = 0
        if pid is not None:
            # Fields 14 and 15 (utime, stime) of /proc/<pid>/stat, counted after the ")" of the name.
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            own = int(fields[11]) + int(fields[12])
    except (OSError, ValueError, IndexError):
        return None
    total = sum(ticks)  # user nice system idle iowait irq softirq steal
    return total - ticks[3] - ticks[4], total, own


def other_cpu_share(before, after) -> float | None:
    """The share of all CPUs that processes other than the measured one used between two `cpu_times`.

    None when either is missing or less than MIN_MEASURED_SECONDS passed: the
    counters tick 100 times a second, too coarse for a shorter span.
    """
    if before is None or after is None:
        return None
    busy, total, own = (end - start for start, end in zip(before, after))
    if total < MIN_MEASURED_SECONDS * os.sysconf("SC_CLK_TCK") * (os.cpu_count() or 1):
        return None
    return max(0.0, (busy - own) / total)


def wait_for_quiet(max_share: float, timeout: float) -> None:
    """Waits (at most `timeout` s) until other processes use at most `max_share` of the CPUs."""
    deadline, told = time.monotonic() + timeout, False
    while True:
        before = cpu_times()
        time.sleep(0.5)
        share = other_cpu_share(before, cpu_times())
        if share is None or share <= max_share or time.monotonic() > deadline:
            return
        if not told:
            logger.info("waiting for the machine to go quiet: other processes use %.0f%% of the CPUs",
                        100 * share)
            told = True
        time.sleep(2.0)


def take_turns(workers: dict[str, WorkerProcess], rounds: int, label: str, *, max_other_cpu: float,
               quiet_timeout: float) -> dict[str, list[dict]]:
    """Rounds of A B A B ...: each worker times one round in turn, the others wait idle.

    Each round starts on a quiet machine, and a round during which other
    processes took more than `max_other_cpu` of the CPUs is run again (up to
    ROUND_RETRIES times): on 2 cores one busy neighbour halves a side's CPU,
    and PyTorch's OpenMP threads lose far more than that, which a median of
    three rounds does not absorb.
    """
    records = {name: [] for name in workers}
    for index in range(rounds):
        for name, worker in workers.items():
            for attempt in range(1, ROUND_RETRIES + 2):
                wait_for_quiet(max_other_cpu, quiet_timeout)
                before = cpu_times(worker.process.pid)
                record = worker.time_round()
                share = other_cpu_share(before, cpu_times(worker.process.pid))
                record.update(other_cpu_share=share, attempts=attempt)
                if share is None or share <= max_other_cpu or attempt > ROUND_RETRIES:
                    break
                logger.info("%s, round %d, %s: other processes took %.0f%% of the CPUs, again",
                            label, index + 1, name, 100 * share)
            records[name].append(record)
            value = record.get("tokens_per_second")
            shown = f"{value:,.0f} tokens/s" if value is not None else f"{record['seconds_per_epoch']:.1f} s/epoch"
            logger.info("%s, round %d/%d, %s: %s", label, index + 1, rounds, name, shown)
    return records


def run_group(label: str, zoo_spec: dict, variants: dict[str, dict], base_env: dict, log_dir: Path,
              pytorch: bool, **turns) -> dict:
    """Starts the zoo variants (and PyTorch) for one row, lets them take turns, stops them.

    `turns` are take_turns' rounds, max_other_cpu and quiet_timeout.

    Returns:
        {side name: {"worker": ready info, "rounds": [round records]}}
    """
    workers: dict[str, WorkerProcess] = {}
    try:
        for variant, env in variants.items():
            name = zoo_side_name(variant)
            logger.info("%s: starting %s", label, name)
            workers[name] = WorkerProcess(name, zoo_spec, worker_environment({**base_env, **env}), log_dir)
        if pytorch:
            zoo_ready = next(iter(workers.values())).ready
            spec = {**zoo_spec, "side": PYTORCH, "config": zoo_ready["config"]}
            logger.info("%s: starting %s", label, PYTORCH)
            workers[PYTORCH] = WorkerProcess(PYTORCH, spec, worker_environment({}), log_dir)
        records = take_turns(workers, label=label, **turns)
    finally:
        for worker in workers.values():
            worker.close()
    return {name: {"worker": workers[name].ready, "rounds": records[name]} for name in workers}


# === Results ===


def zoo_side_name(variant: str) -> str:
    return f"zoo {variant}"


def side_label(side: str) -> str:
    return "PyTorch" if side == PYTORCH else side


def summarize(values: list[float]) -> dict:
    """Median and min-max of a side's per-round values."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "rounds": list(values)}


def side_result(side: dict, key: str) -> dict:
    """A side's summary of `key` over its rounds, with the rounds' losses and contention."""
    rounds = side["rounds"]
    return {key: summarize([record[key] for record in rounds]),
            "loss": [record["loss"] for record in rounds],
            "other_cpu_share": [record.get("other_cpu_share") for record in rounds],
            "attempts": [record.get("attempts", 1) for record in rounds],
            "worker": side["worker"]}


def language_model_row(shape: str, cell: str, sides: dict) -> dict:
    """A (shape, cell) result: each side's tokens/s summary, its worker info and losses."""
    zoo_info = next(side["worker"] for name, side in sides.items() if name != PYTORCH)
    options, training = zoo_info["config"]["model"], zoo_info["config"]["training"]
    row = {
        "shape": shape, "cell": cell, "preset": zoo_info["config"]["preset"],
        "vocabulary_size": zoo_info["vocabulary_size"], "embedding_dim": options["embedding_dim"],
        "hidden_dim": options["hidden_dim"], "num_layers": options["num_layers"],
        "dropout": options.get("dropout", 0.0), "batch_size": training["batch_size"],
        "num_steps": training["num_steps"],
        "sides": {name: side_result(side, "tokens_per_second") for name, side in sides.items()},
    }
    row["ratios"] = ratios({name: side["tokens_per_second"]["median"] for name, side in row["sides"].items()})
    return row


def epoch_row(preset: str, sides: dict) -> dict:
    """A preset's seconds-per-epoch estimate for each zoo variant."""
    corpus = EPOCH_CORPORA[preset]
    info = next(iter(sides.values()))["worker"]
    return {
        "preset": preset, "task": corpus["task"], "corpus": corpus["corpus"],
        "train_size": info["train_size"], "batch_size": info["batch_size"],
        "batches_per_epoch": info["batches_per_epoch"], "vocabulary_size": info["vocabulary_size"],
        "sampled_batches": side_rounds_steps(sides),
        "sides": {name: side_result(side, "seconds_per_epoch") for name, side in sides.items()},
    }


def side_rounds_steps(sides: dict) -> int:
    """Batches timed per side: steps per round times rounds."""
    rounds = next(iter(sides.values()))["rounds"]
    return sum(record["steps"] for record in rounds)


def ratios(medians: dict[str, float]) -> dict[str, float]:
    """Each zoo side over PyTorch, and each further zoo variant over the first (tokens/s: >1 is faster)."""
    zoo = [name for name in medians if name != PYTORCH]
    result = {}
    if PYTORCH in medians:
        result.update({f"{name} / {PYTORCH}": medians[name] / medians[PYTORCH] for name in zoo})
    result.update({f"{name} / {zoo[0]}": medians[name] / medians[zoo[0]] for name in zoo[1:]})
    return result


def contention(rows: list[dict]) -> dict | None:
    """Over all kept rounds: the most CPU other processes took, and how many rounds were run again."""
    shares = [share for row in rows for side in row["sides"].values()
              for share in side.get("other_cpu_share", []) if share is not None]
    attempts = [count for row in rows for side in row["sides"].values() for count in side.get("attempts", [])]
    if not shares:
        return None
    return {"max_other_cpu_share": max(shares), "rounds": len(attempts),
            "rounds_run_again": sum(count > 1 for count in attempts)}


def versions(results: dict) -> dict:
    """Library versions as the workers reported them."""
    found = {}
    for row in results["language_models"] + results["epochs"]:
        for side in row["sides"].values():
            found.update(side["worker"]["versions"])
    return found


def _spread(summary: dict | None, digits: int = 0) -> str:
    if summary is None:
        return "–"
    return f"{summary['median']:,.{digits}f} ({summary['min']:,.{digits}f}–{summary['max']:,.{digits}f})"


def markdown_report(results: dict) -> str:
    """The Markdown page: a table per language-model shape, the epoch table, the machine."""
    settings, machine = results["settings"], results["machine"]
    zoo_sides = [zoo_side_name(variant) for variant in settings["variants"]]
    columns = zoo_sides + [PYTORCH]
    names = ", ".join(f"`{variant}` ({_environment_text(env)})" for variant, env in settings["variants"].items())
    lines = [
        "# Training speed: the zoo's training path against PyTorch's word_language_model",
        "",
        f"Command: `{results['command']}`",
        "",
        f"Machine: {machine['cpu_model']} ({machine['cpu_family_model']}), {machine['logical_cpus']} "
        f"logical CPUs; {_versions_text(versions(results))}. Zoo variants: {names}.",
        "",
        f"Each side trains in its own process; after {settings['warmup']} warm-up steps (not timed), the "
        f"sides take turns, {settings['rounds']} rounds of {settings['steps']} training steps each. Shown: "
        "the median tokens per second over the rounds, (min–max) in brackets; ratios are of medians "
        "(above 1: the first is faster). Data: " + settings["data"] + ".",
    ]
    if results.get("contention"):
        busy = results["contention"]
        lines += ["", f"Each round started on a quiet machine; a round during which other processes took "
                      f"more than {settings['max_other_cpu']:.0%} of the CPUs was run again "
                      f"({busy['rounds_run_again']} of {busy['rounds']} were). In the rounds kept, other "
                      f"processes took at most {busy['max_other_cpu_share']:.0%}."]
    for shape in dict.fromkeys(row["shape"] for row in results["language_models"]):
        rows = [row for row in results["language_models"] if row["shape"] == shape]
        first = rows[0]
        lines += ["", f"## {LANGUAGE_MODEL_SHAPES[shape]['title']} (`{first['preset']}`): vocabulary "
                      f"{first['vocabulary_size']:,}, {first['num_layers']} x {first['hidden_dim']}, batch "
                      f"{first['batch_size']}, {first['num_steps']} steps, dropout {first['dropout']}", ""]
        ratio_names = [f"{zoo} / {PYTORCH}" for zoo in zoo_sides] + [f"{zoo} / {zoo_sides[0]}" for zoo in zoo_sides[1:]]
        header = ["cell"] + [f"{side_label(side)} tokens/s" for side in columns] + \
                 [name.replace(PYTORCH, "PyTorch") for name in ratio_names]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in rows:
            cells = [row["cell"]] + [_spread(row["sides"].get(side, {}).get("tokens_per_second")) for side in columns]
            cells += [f"{row['ratios'][name]:.2f}" if name in row["ratios"] else "–" for name in ratio_names]
            lines.append("| " + " | ".join(cells) + " |")
    if results["epochs"]:
        lines += ["", "## Seconds per training epoch, classifier and tagger", "",
                  f"Synthetic corpora of the real train sizes and sentence-length spread; after "
                  f"{settings['epoch_warmup']} warm-up batches, {settings['epoch_batches']} batches timed per "
                  "round, in the same turns, scaled to the epoch's batch count (training steps only, no dev "
                  "evaluation). Median (min–max) over the rounds.", ""]
        header = ["preset", "corpus", "sentences", "batches per epoch"] + \
                 [f"{side} s/epoch" for side in zoo_sides] + \
                 [f"{zoo} speed / {zoo_sides[0]}" for zoo in zoo_sides[1:]]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in results["epochs"]:
            medians = {side: row["sides"][side]["seconds_per_epoch"]["median"] for side in zoo_sides}
            cells = [f"`{row['preset']}`", f"synthetic {row['corpus']}", f"{row['train_size']:,}",
                     f"{row['batches_per_epoch']:,}"]
            cells += [_spread(row["sides"][side]["seconds_per_epoch"], 1) for side in zoo_sides]
            cells += [f"{medians[zoo_sides[0]] / medians[zoo]:.2f}" for zoo in zoo_sides[1:]]
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Machine", "", "| | |", "|---|---|",
              f"| CPU | {machine['cpu_model']} ({machine['vendor']}, {machine['cpu_family_model']}; "
              f"hypervisor {machine['hypervisor'] or 'none'}) |",
              f"| CPUs | {machine['logical_cpus']} logical ({machine['sockets']} socket, {machine['cores_per_socket']} "
              f"cores per socket, {machine['threads_per_core']} thread per core) |"]
    lines += [f"| {flag} | {'yes' if present else 'no'} |" for flag, present in machine["flags"].items()]
    lines += [f"| {name} | {value} |" for name, value in _thread_settings(results).items()]
    return "\n".join(lines) + "\n"


def _environment_text(env: dict) -> str:
    return ", ".join(f"{key}={value}" for key, value in env.items()) or "environment unchanged"


def _versions_text(found: dict) -> str:
    names = {"tensorflow": "TensorFlow", "keras": "Keras", "torch": "PyTorch"}
    return ", ".join(f"{names.get(name, name)} {version}" for name, version in found.items())


def _thread_settings(results: dict) -> dict:
    """Per side: TF_ENABLE_ONEDNN_OPTS, whether oneDNN was on, and the thread pools, as the workers saw them."""
    settings = {}
    for row in results["language_models"] + results["epochs"]:
        for name, side in row["sides"].items():
            worker = side["worker"]
            if name in settings:
                continue
            parts = [f"{key} {value}" for key, value in worker["threads"].items()]
            if "onednn_enabled" in worker:
                onednn = worker["environment"].get("TF_ENABLE_ONEDNN_OPTS") or "unset"
                state = {True: "on", False: "off", None: "unknown"}[worker["onednn_enabled"]]
                parts.insert(0, f"TF_ENABLE_ONEDNN_OPTS={onednn} (oneDNN {state})")
                parts.append("(0: TensorFlow's default, one thread per core)")
            settings[name] = ", ".join(parts)
    return {f"{side_label(name)} threads": text for name, text in settings.items()}


def write_report(results: dict, output_dir: Path) -> None:
    """training_speed.json, .md and .png (tokens per second per shape, cell and side)."""
    from plotting import bar_chart

    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "training_speed.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (output_dir / "training_speed.md").write_text(markdown_report(results), encoding="utf-8")
    names, values = [], []
    against_pytorch = any(name.endswith(f"/ {PYTORCH}") for row in results["language_models"]
                          for name in row["ratios"])
    for row in results["language_models"]:
        if against_pytorch:
            for name, ratio in row["ratios"].items():
                if name.endswith(f"/ {PYTORCH}"):
                    names.append(f"{row['shape']} {row['cell']}, {name.split(' / ')[0]}")
                    values.append(ratio)
        else:
            for side, result in row["sides"].items():
                names.append(f"{row['shape']} {row['cell']}, {side}")
                values.append(result["tokens_per_second"]["median"])
    if names:
        figsize = (7, 0.3 * len(names) + 1.3)
        if against_pytorch:
            bar_chart(output_dir / "training_speed.png", names, values, reference=1.0, figsize=figsize,
                      xlabel="zoo tokens/s over PyTorch tokens/s (medians; 1 = as fast)",
                      title="LM training speed, zoo (Keras) relative to PyTorch")
        else:
            bar_chart(output_dir / "training_speed.png", names, values, figsize=figsize,
                      xlabel="training tokens per second (median of rounds)", title="LM training speed, zoo")


# === Command line ===


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def parse_variants(texts: list[str]) -> dict[str, dict]:
    """`default` or `NAME=KEY=VALUE[,KEY=VALUE...]` -> {name: environment}."""
    variants = {}
    for text in texts:
        name, _, assignments = text.partition("=")
        if not name:
            raise ValueError(f"A variant needs a name: {text!r}.")
        env = dict(_key_value(item) for item in assignments.split(",") if item) if assignments else {}
        if name in variants:
            raise ValueError(f"Variant {name!r} is given twice.")
        variants[name] = env
    return variants


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:4]))
    parser.add_argument("--shapes", nargs="*", choices=list(LANGUAGE_MODEL_SHAPES), default=None,
                        help="language-model shapes (default: small medium; --quick: tiny; none: skip them)")
    parser.add_argument("--cells", nargs="+", choices=CELLS, default=None,
                        help="recurrent cells (default: all three; --quick: lstm)")
    parser.add_argument("--epoch_presets", nargs="*", choices=list(EPOCH_CORPORA), default=list(EPOCH_CORPORA),
                        help="classifier/tagger presets timed per epoch (give none to skip them)")
    parser.add_argument("--rounds", type=int, default=None, help="turns each side takes (default 3; --quick 2)")
    parser.add_argument("--steps", type=int, default=None,
                        help="language-model training steps timed per round (default 20; --quick 3)")
    parser.add_argument("--epoch_batches", type=int, default=None,
                        help="classifier/tagger batches timed per round, and their warm-up (default 100; --quick 3)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed steps each worker trains first (default 5; --quick 2)")
    parser.add_argument("--variants", nargs="+", default=["default"],
                        help="zoo variants, each its own column: 'default' or NAME=KEY=VALUE[,KEY=VALUE]")
    parser.add_argument("--env", action="append", type=_key_value, default=[], metavar="KEY=VALUE",
                        help="environment variable for every zoo worker (repeatable)")
    parser.add_argument("--data", default=None,
                        help="a PTB-style corpus (e.g. ../shared/data/ptb) instead of the synthetic stream")
    parser.add_argument("--max_other_cpu", type=float, default=0.1,
                        help="run a round again when other processes took more than this share of the CPUs "
                             "during it (default 0.1; 1 turns it off)")
    parser.add_argument("--quiet_timeout", type=float, default=300,
                        help="seconds to wait at most for a quiet machine before each round (default 300)")
    parser.add_argument("--skip_pytorch", action="store_true", help="zoo columns only, even if torch is installed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output_dir", default=None,
                        help="where the results go (default benchmarks/results; --quick: a new temporary directory)")
    parser.add_argument("--quick", action="store_true", help="a tiny configuration: a smoke run for CI speed")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return parser


def _fill_defaults(args) -> None:
    quick = args.quick
    for name, full, small in (("shapes", ["small", "medium"], ["tiny"]), ("cells", list(CELLS), ["lstm"]),
                              ("rounds", 3, 2), ("steps", 20, 3), ("epoch_batches", 100, 3), ("warmup", 5, 2)):
        if getattr(args, name) is None:
            setattr(args, name, small if quick else full)
    if args.output_dir is None:
        args.output_dir = tempfile.mkdtemp(prefix="training_speed_quick_") if quick else str(DEFAULT_OUTPUT_DIR)


def pytorch_installed() -> bool:
    """Whether `import torch` would find PyTorch (without importing it into this process)."""
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        return False


def epoch_warmup(args) -> int:
    """Untimed batches of a classifier or tagger worker: at least one round's worth.

    Their batches are padded to each batch's longest sentence, and the first
    batches of each new length run slower (measured: about twice as slow over
    the first hundred SST batches), so a few steps do not reach the steady
    state that most of an epoch runs in.
    """
    return max(args.warmup, args.epoch_batches)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.worker is not None:
        return _worker_main(args.worker)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    _fill_defaults(args)
    for name in ("rounds", "steps", "epoch_batches", "warmup"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    try:
        variants = parse_variants(args.variants)
    except (ValueError, argparse.ArgumentTypeError) as error:
        parser.error(str(error))
    base_env = dict(args.env)

    pytorch = not args.skip_pytorch and pytorch_installed()
    if not pytorch and not args.skip_pytorch:
        logger.warning("PyTorch is not installed: only the zoo columns are measured. To add PyTorch's, "
                       "install it with:\n    %s", PYTORCH_INSTALL_HINT)

    turns = {"rounds": args.rounds, "max_other_cpu": args.max_other_cpu, "quiet_timeout": args.quiet_timeout}
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="training_speed_") as scratch:
        scratch = Path(scratch)
        log_dir = scratch / "logs"
        log_dir.mkdir()
        shared_tokens = ptb_tokens(args.data) if args.data else None
        language_models = []
        for shape in args.shapes:
            definition = LANGUAGE_MODEL_SHAPES[shape]
            tokens = shared_tokens or synthetic_stream(definition["vocabulary_size"], STREAM_TOKENS[shape], args.seed)
            corpus = write_corpus(scratch / f"corpus_{shape}.txt", tokens)
            for cell in args.cells:
                spec = {"side": "zoo", "job": "language_model", "preset": definition["preset"], "cell": cell,
                        "model": definition.get("model"), "training": definition.get("training"),
                        "corpus": str(corpus), "steps": args.steps, "warmup": args.warmup, "seed": args.seed}
                sides = run_group(f"{shape} {cell}", spec, variants, base_env, log_dir, pytorch, **turns)
                language_models.append(language_model_row(shape, cell, sides))
        epochs = []
        for preset in args.epoch_presets:
            spec = {"side": "zoo", "job": "epoch", "preset": preset, "steps": args.epoch_batches,
                    "warmup": epoch_warmup(args), "seed": args.seed}
            sides = run_group(preset, spec, variants, base_env, log_dir, False, **turns)
            epochs.append(epoch_row(preset, sides))

    results = {
        "benchmark": "training_speed",
        "command": "python benchmarks/training_speed.py " + shlex.join(sys.argv[1:] if argv is None else argv),
        "machine": machine_info(),
        "settings": {"rounds": args.rounds, "steps": args.steps, "epoch_batches": args.epoch_batches,
                     "warmup": args.warmup, "epoch_warmup": epoch_warmup(args),
                     "max_other_cpu": args.max_other_cpu, "quiet_timeout": args.quiet_timeout, "seed": args.seed, "variants": variants, "env": base_env,
                     "pytorch": pytorch,
                     "data": f"the train split of {args.data}" if args.data else
                             "a seeded Zipf-like synthetic stream (every word once, then P(rank r) ~ 1/r)"},
        "language_models": language_models,
        "epochs": epochs,
        "contention": contention(language_models + epochs),
        "wall_seconds": round(time.time() - started, 1),
    }
    output_dir = Path(args.output_dir)
    write_report(results, output_dir)
    print(markdown_report(results))
    logger.info("wrote %s/training_speed.{json,md,png} in %.0f s", output_dir, results["wall_seconds"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

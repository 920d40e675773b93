"""Join finished classifier or tagger runs into one model: `rnn-zoo-ensemble --help`.

    rnn-zoo-ensemble --runs runs/sst_s0 runs/sst_s1 runs/sst_s2 --output_dir runs/sst_ensemble
    rnn-zoo-export --run runs/sst_ensemble --model_name sst2_bilstm

The members must come from the same data (the same data options, hence the
same vocabularies and labels); typically the same preset with different
`--seed`s. The output is a run directory like the ones rnn-zoo-train writes
(config.json, the vocabularies, metrics.json with the ensemble's dev figures,
model.keras holding a `zoo.Ensemble`), so rnn-zoo-evaluate and rnn-zoo-export
take it unchanged.

The arguments are parsed before TensorFlow, Keras and the zoo are imported,
so `--help` and argument errors answer at once.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import shutil
import sys
from pathlib import Path
from typing import Sequence

from training.errors import DataError
from training.quiet import quiet_tensorflow_logs

logger = logging.getLogger(__name__)

PROG = "rnn-zoo-ensemble"
_FILES = ("config.json", "vocabulary.json", "model.keras")
_SHARED_FILES = ("vocabulary.json", "labels.json", "char_vocabulary.json")


def ensemble_runs(run_dirs: Sequence[str | Path], output_dir: str | Path, *,
                  overwrite: bool = False, command: str | None = None) -> dict:
    """Writes the ensemble of `run_dirs` as a run directory; returns its metrics.

    Raises:
        DataError: a member is not a finished run, or the members were trained
            on different data (data options, vocabularies, labels, task).
        ValueError: fewer than two members, language models, models that do
            not fit together, or an output directory that holds something
            and no `overwrite`.
    """
    import keras

    import zoo
    from training.run import PreparedData, evaluate, load_splits
    from training.vocab import LabelVocabulary, Vocabulary

    run_dirs = [Path(run_dir) for run_dir in run_dirs]
    output_dir = Path(output_dir)
    if len(run_dirs) < 2:
        raise ValueError(f"An ensemble needs at least two runs, got {len(run_dirs)}.")
    if len({run_dir.resolve() for run_dir in run_dirs}) != len(run_dirs):
        raise ValueError("A run is given twice; an ensemble of one model with itself is that model.")
    if output_dir.resolve() in {run_dir.resolve() for run_dir in run_dirs}:
        raise ValueError(f"--output_dir {output_dir} is one of the members.")
    configs = [_member_config(run_dir) for run_dir in run_dirs]
    _check_same_data(run_dirs, configs)

    first = run_dirs[0]
    vocabulary = Vocabulary.load(first / "vocabulary.json")
    labels = LabelVocabulary.load(first / "labels.json")
    char_path = next((run_dir / "char_vocabulary.json" for run_dir in run_dirs
                      if (run_dir / "char_vocabulary.json").exists()), None)
    char_vocabulary = Vocabulary.load(char_path) if char_path else None

    members = [keras.saving.load_model(run_dir / "model.keras", compile=False) for run_dir in run_dirs]
    model = zoo.Ensemble(members, name="ensemble")
    config = _ensemble_config(run_dirs, configs, model, command)
    if output_dir.exists() and any(output_dir.iterdir()):
        if not overwrite:
            raise ValueError(f"{output_dir} is not empty; pass --overwrite to replace it.")
        shutil.rmtree(output_dir)

    _, dev = load_splits(config)
    prepared = PreparedData(vocabulary, labels, None, dev, char_vocabulary)
    dev_metrics = evaluate(model, config, prepared, dev)
    member_metrics = [_read_json(run_dir / "metrics.json") if (run_dir / "metrics.json").exists()
                      else {} for run_dir in run_dirs]
    metrics = {
        "dev": dev_metrics,
        "parameters": int(model.count_params()),
        "train_seconds": round(sum(m.get("train_seconds", 0.0) for m in member_metrics), 1),
        "data": member_metrics[0].get("data", {"source": config["data"]["source"]}),
        "members": [{"run": str(run_dir), "seed": member_config.get("seed"),
                     "dev": {k: v for k, v in (m.get("dev") or {}).items() if k != "per_tag"}}
                    for run_dir, member_config, m in zip(run_dirs, configs, member_metrics)],
    }

    output_dir.mkdir(parents=True, exist_ok=True)
    for name in _SHARED_FILES:
        source = char_path if name == "char_vocabulary.json" else first / name
        if source is not None and source.exists():
            shutil.copyfile(source, output_dir / name)
    _write_json(output_dir / "config.json", config)
    model.save(output_dir / "model.keras")
    _write_json(output_dir / "metrics.json", metrics)
    shown = {k: v for k, v in dev_metrics.items() if k != "per_tag"}
    logger.info("ensemble of %d: dev %s (members: %s)", len(members), shown,
                ", ".join(str(m["dev"]) for m in metrics["members"]))
    return metrics


def _member_config(run_dir: Path) -> dict:
    for name in _FILES:
        if not (run_dir / name).exists():
            raise DataError(f"{run_dir / name}: no such file (is {run_dir} a finished training run?)")
    config = _read_json(run_dir / "config.json")
    if config.get("task") not in ("classifier", "tagger"):
        raise ValueError(f"{run_dir} is a {config.get('task')} run; only classifiers and taggers "
                         "can be ensembled (a language model's signatures carry its own state).")
    if not (run_dir / "labels.json").exists():
        raise DataError(f"{run_dir / 'labels.json'}: no such file")
    return config


def _check_same_data(run_dirs, configs) -> None:
    """DataError naming the first member that was trained on something else."""
    first_dir, first = run_dirs[0], configs[0]
    for run_dir, config in zip(run_dirs[1:], configs[1:]):
        if config["task"] != first["task"]:
            raise DataError(f"{run_dir} is a {config['task']} run but {first_dir} a {first['task']}: "
                            "ensemble runs of one task.")
        if config.get("data") != first.get("data"):
            changed = sorted(key for key in set(config.get("data", {})) | set(first.get("data", {}))
                             if config.get("data", {}).get(key) != first.get("data", {}).get(key))
            raise DataError(f"{run_dir} was trained on other data than {first_dir} "
                            f"(data options differ: {', '.join(changed)}); ensemble runs of the "
                            "same data only.")
        for name in _SHARED_FILES:
            ours, theirs = first_dir / name, run_dir / name
            if name == "char_vocabulary.json" and not (ours.exists() and theirs.exists()):
                continue  # a word-only tagger beside a character tagger
            if ours.exists() != theirs.exists() or (
                    ours.exists() and _read_json(ours) != _read_json(theirs)):
                raise DataError(f"{theirs} differs from {ours}: the members must share their "
                                "vocabularies and labels (the same train data).")


def _common(dicts: Sequence[dict]) -> dict:
    """The entries every dict has with the same value."""
    return {key: value for key, value in dicts[0].items()
            if all(key in d and d[key] == value for d in dicts[1:])}


def _ensemble_config(run_dirs, configs, model, command) -> dict:
    presets = {config.get("preset") for config in configs}
    cells = {config.get("cell") for config in configs}
    options = _common([config.get("model", {}) for config in configs])
    options["ensemble_members"] = len(configs)
    if model.uses_characters:
        # The signatures and the evaluation spell words as long as the longest member reads.
        options["max_word_length"] = model.max_word_length
        options["char_vocabulary_size"] = model.char_vocabulary_size
    return {
        "task": configs[0]["task"],
        "preset": presets.pop() if len(presets) == 1 else None,
        "cell": cells.pop() if len(cells) == 1 else "mixed",
        "model": options,
        "training": _common([config.get("training", {}) for config in configs]),
        "data": configs[0]["data"],
        "seed": None,
        "command": command,
        "members": [{"run": str(run_dir), "seed": config.get("seed"), "preset": config.get("preset"),
                     "command": config.get("command")} for run_dir, config in zip(run_dirs, configs)],
        "output_dir": None,
    }


def _read_json(path: Path):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"{path}: cannot read: {error}") from None


def _write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Join finished classifier or tagger runs trained on the same data (e.g. one "
                    "preset with several --seed) into one model that averages their "
                    "probabilities; writes a run directory for rnn-zoo-evaluate and rnn-zoo-export.",
    )
    parser.add_argument("--runs", nargs="+", required=True, metavar="RUN_DIR",
                        help="two or more run directories written by rnn-zoo-train")
    parser.add_argument("--output_dir", required=True, help="the ensemble's run directory")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace what --output_dir holds")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_tensorflow_logs()
    argv = sys.argv[1:] if argv is None else list(argv)
    command = " ".join(shlex.quote(a) for a in [PROG, *argv])
    try:
        metrics = ensemble_runs(args.runs, args.output_dir, overwrite=args.overwrite,
                                command=command)
    except (DataError, ValueError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    dev = {k: v for k, v in metrics["dev"].items() if k != "per_tag"}
    print(json.dumps({"run": str(args.output_dir), "dev": dev,
                      "members": [m["dev"] for m in metrics["members"]]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Adds the signatures newer exports have to a language-model SavedModel already exported.

    python -m serving.export.upgrade saved_models/<model>/<version>

Today that is `sample` (serving.export.sampling), built on the version's own
`step`, so the weights and every other signature stay exactly as they were
(checked before the new directory replaces the old). zoo.json, the warm-up
requests and the model card list the new signature; nothing else changes.
A version that has them already is left alone.

The arguments are parsed before TensorFlow is imported, so `--help` answers at once.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Sequence

from training.quiet import quiet_tensorflow_logs

logger = logging.getLogger(__name__)

PROG = "python -m serving.export.upgrade"


def upgrade(version_dir: str | Path) -> list[str]:
    """Adds the missing language-model signatures to `version_dir`; returns the names added.

    Raises:
        ValueError: not a zoo language-model export, or the re-saved model
            answers differently from the original (the original is then kept).
    """
    import numpy as np
    import tensorflow as tf

    from serving.export.signatures import SIGNATURES, sampling_signature
    from serving.export.warmup_requests import write_warmup_requests
    from serving.export.writer import _move_into_place

    version_dir = Path(version_dir)
    info_path = version_dir / "assets.extra" / "zoo.json"
    if not (version_dir / "saved_model.pb").exists() or not info_path.exists():
        raise ValueError(f"{version_dir} is not a zoo export (no saved_model.pb and assets.extra/zoo.json)")
    info = json.loads(info_path.read_text(encoding="utf-8"))
    if info.get("task") != "language_model":
        raise ValueError(f"{version_dir} is a {info.get('task')} export; only language models gain "
                         "signatures here")
    loaded = tf.saved_model.load(str(version_dir))
    missing = [name for name in SIGNATURES["language_model"] if name not in loaded.signatures]
    if missing != ["sample"]:
        if not missing:
            logger.info("%s has every signature already", version_dir)
            return []
        raise ValueError(f"{version_dir} lacks {missing}: re-export it from its run instead")

    state_size = int(info["state_size"])
    loaded.sample = sampling_signature(loaded.step, state_size)
    signatures = {name: loaded.signatures[name] for name in loaded.signatures}
    signatures["sample"] = loaded.sample.get_concrete_function()

    staging = Path(tempfile.mkdtemp(prefix=f".tmp-{version_dir.name}-", dir=version_dir.parent))
    try:
        staging.chmod(0o755)
        tf.saved_model.save(loaded, str(staging), signatures=signatures)
        if (staging / "assets").is_dir() and not any((staging / "assets").iterdir()):
            (staging / "assets").rmdir()  # the tables' vocabularies live in the graph, not here
        for entry in version_dir.iterdir():  # the side files, and assets.extra
            if entry.name not in ("saved_model.pb", "variables", "assets", "fingerprint.pb"):
                copy = shutil.copytree if entry.is_dir() else shutil.copyfile
                copy(entry, staging / entry.name)
        info["signatures"] = list(info["signatures"]) + ["sample"]
        (staging / "assets.extra" / "zoo.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        tokens = json.loads((version_dir / "assets.extra" / "vocabulary.json").read_text(encoding="utf-8"))["tokens"]
        write_warmup_requests(staging, model_name=version_dir.parent.name, task="language_model", tokens=tokens,
                              state_size=state_size)
        card = staging / "MODEL_CARD.md"
        if card.exists():
            text = card.read_text(encoding="utf-8")
            card.write_text(text.replace("`score`.", "`score`, `sample`."), encoding="utf-8")
        _check_same_answers(tf, np, loaded, tf.saved_model.load(str(staging)), state_size, len(tokens))
        _move_into_place(staging, version_dir, overwrite=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("added %s to %s", missing, version_dir)
    return missing


def _check_same_answers(tf, np, before, after, state_size: int, vocabulary_size: int) -> None:
    """ValueError unless the re-saved step and score give bit-identical answers."""
    rng = np.random.default_rng(0)
    ids = tf.constant(rng.integers(2, vocabulary_size, size=(3, 4)), tf.int64)
    state = tf.constant(rng.normal(size=(3, state_size)).astype(np.float32) * 0.1)
    text = tf.constant(["the cat sat", "a"])
    for name, inputs in (("step", {"token_ids": ids, "state": state}), ("score", {"text": text}),
                         ("tokenize", {"text": text}), ("serving_default", {"token_ids": ids})):
        old, new = before.signatures[name](**inputs), after.signatures[name](**inputs)
        for key in old:
            if not np.array_equal(old[key].numpy(), new[key].numpy()):
                raise ValueError(f"the re-saved {name} answers differently in {key!r}; kept the original")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Add the signatures newer exports have (today: sample) to language-model "
                    "SavedModels exported before them, in place, weights untouched.")
    parser.add_argument("version_dirs", nargs="+", metavar="VERSION_DIR",
                        help="e.g. saved_models/<model>/<version>: a language model exported "
                             "before the sample signature")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    quiet_tensorflow_logs()
    for version_dir in args.version_dirs:
        try:
            added = upgrade(version_dir)
        except ValueError as error:
            print(f"{PROG}: error: {error}", file=sys.stderr)
            return 2
        print(f"{version_dir}: {'added ' + ', '.join(added) if added else 'nothing to add'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

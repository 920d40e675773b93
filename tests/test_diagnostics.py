"""The gradient diagnostics: closed forms, cell orderings, clipping, the long-dependency task, the command."""

import json

import keras
import numpy as np
import pytest

import zoo
from training import train as train_cli
from training.datasets import load_split
from training.diagnostics import cli
from training.diagnostics.initial_state import compare_initial_states, summarize_initial_states
from training.diagnostics.sources import from_run
from training.run import resolve_config
from training.vocab import Vocabulary
from training.diagnostics.clipping import clipping_traces, set_spectral_radius
from training.diagnostics.gradient_flow import effective_memory, gradient_flow, spectral_radii, unroll
from training.diagnostics.long_dependency import first_token_task, train_on_task
from training.clipping import clip_by_global_norm, global_norm
from training.diagnostics.variants import parse_variant

from tiny_corpora import write_sst, write_text


def _tokens(rows, length, vocabulary_size, seed=0):
    return np.random.default_rng(seed).integers(1, vocabulary_size, size=(rows, length)).astype("int32")


@pytest.mark.parametrize("cell", ["simple_rnn", "lstm", "gru", "gated_lstm"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_the_step_by_step_unroll_is_the_backbone(cell, bidirectional):
    keras.utils.set_random_seed(0)
    model = zoo.build("classifier", cell=cell, vocabulary_size=30, embedding_dim=6, hidden_dim=5,
                      num_layers=2, bidirectional=bidirectional, learned_initial_state=True)
    model.build((None, None))
    model.backbone.initial_state_vector.assign(np.linspace(-0.5, 0.5, model.state_size))
    token_ids = _tokens(3, 9, 30)
    sequence, _ = model.backbone(token_ids)
    _, hidden = unroll(model.backbone, model.backbone.embedding(token_ids))
    np.testing.assert_allclose(np.stack(hidden[-1], axis=1), sequence, rtol=1e-5, atol=1e-6)


def test_a_linear_rnn_with_half_the_identity_halves_the_gradient_at_every_step():
    keras.utils.set_random_seed(0)
    model = zoo.build("language_model", cell="simple_rnn", vocabulary_size=40, embedding_dim=6,
                      hidden_dim=8, num_layers=1)
    model.build((None, None))
    cell = model.backbone.recurrent_layers[0].cell
    cell.activation = keras.activations.linear  # h_t = W_x x_t + W_h h_{t-1} + b
    cell.recurrent_kernel.assign(0.5 * np.eye(8))
    flow = gradient_flow(model, _tokens(5, 33, 40), max_distance=30, num_ends=3)

    closed_form = 0.5 ** np.arange(31)  # dh_T/dh_t = (0.5 I)^(T - t)
    np.testing.assert_allclose(flow.hidden_norms[0] / flow.hidden_norms[0][0], closed_form, rtol=1e-6)
    np.testing.assert_allclose(flow.input_norms / flow.input_norms[0], closed_form, rtol=1e-6)
    assert flow.effective_memory() == 10  # 0.5^10 = 9.8e-4 is the first below 1e-3
    assert flow.spectral_radii == pytest.approx([0.5])


def test_effective_memory_is_none_when_the_norm_never_falls_far_enough():
    assert effective_memory([1.0, 0.5, 2e-3]) is None
    assert effective_memory([2.0, 0.5, 1.9e-3, 1e-9]) == 2


def test_a_fresh_lstm_remembers_longer_than_a_fresh_simple_rnn_of_the_same_width():
    # Zaremba et al.'s uniform init (init_scale, as the PTB presets use). With
    # the Keras initializers the SimpleRNN's orthogonal recurrent matrix
    # (spectral radius 1) is near an isometry on small inputs and it is the
    # other way round at initialization (see the README).
    memories = {}
    for cell in ("simple_rnn", "lstm"):
        keras.utils.set_random_seed(0)
        model = zoo.build("language_model", cell=cell, vocabulary_size=200, embedding_dim=32,
                          hidden_dim=32, init_scale=0.1)
        flow = gradient_flow(model, _tokens(8, 62, 200), max_distance=60, num_ends=2)
        memories[cell] = flow.effective_memory()
    assert memories["simple_rnn"] is not None and memories["simple_rnn"] < 15
    assert memories["lstm"] is not None and memories["lstm"] > memories["simple_rnn"] + 5


def test_the_spectral_radius_is_what_it_was_set_to():
    keras.utils.set_random_seed(0)
    model = zoo.build("tagger", cell="simple_rnn", vocabulary_size=20, hidden_dim=6, num_layers=2)
    model.build((None, None))
    set_spectral_radius(model.backbone.recurrent_layers[1], 1.7)
    radii = spectral_radii(model)
    assert radii[0] == pytest.approx(1.0, rel=1e-5)  # Keras' orthogonal start
    assert radii[1] == pytest.approx(1.7, rel=1e-5)
    assert spectral_radii(zoo.build("tagger", cell="gru", vocabulary_size=20, hidden_dim=6)) is None


def test_clipping_bounds_the_global_norm_exactly_at_the_threshold():
    traces = clipping_traces(recurrent_radius=1.5, clip_norm=1.0, steps=12, length=30, seed=0)
    unclipped, clipped = traces["unclipped"], traces["clipped"]
    norms = np.asarray(clipped.gradient_norms)
    assert (norms > 1.0).any() and (norms < 1.0).any() or (norms > 1.0).all()
    np.testing.assert_allclose(clipped.applied_norms, np.minimum(norms, 1.0), rtol=1e-6)
    assert max(clipped.applied_norms) <= 1.0 * (1 + 1e-6)
    # Without clipping the step is the gradient, and it explodes (well above 1).
    np.testing.assert_allclose(unclipped.applied_norms, unclipped.gradient_norms, rtol=1e-6)
    assert max(unclipped.gradient_norms) > 20.0
    # Both runs start from the same weights on the same batch.
    assert unclipped.gradient_norms[0] == pytest.approx(clipped.gradient_norms[0], rel=1e-6)


def test_the_clip_is_the_one_keras_global_clipnorm_applies():
    rng = np.random.default_rng(0)
    gradients = [keras.ops.convert_to_tensor(rng.normal(size=shape).astype("float32"))
                 for shape in ((3, 4), (4,), (2, 2))]
    clipped, norm = clip_by_global_norm(gradients, 0.75), global_norm(gradients)
    assert float(norm) == pytest.approx(np.sqrt(sum((np.asarray(g) ** 2).sum() for g in gradients)),
                                        rel=1e-6)
    assert float(global_norm(clipped)) == pytest.approx(0.75, rel=1e-6)
    # SGD at learning rate 1 from zero weights moves them by minus the clipped gradient.
    variables = [keras.Variable(np.zeros(g.shape, "float32")) for g in gradients]
    keras.optimizers.SGD(learning_rate=1.0, global_clipnorm=0.75).apply(gradients, variables)
    for variable, ours in zip(variables, clipped):
        np.testing.assert_allclose(-np.asarray(variable), ours, rtol=1e-6, atol=1e-7)


def test_the_first_token_task_puts_the_label_first_and_noise_after():
    data = first_token_task(200, 12, num_classes=2, num_noise=5, seed=3)
    assert data.token_ids.shape == (200, 12) and data.vocabulary_size == 8
    np.testing.assert_array_equal(data.token_ids[:, 0], data.labels + 1)
    assert data.token_ids[:, 1:].min() == 3 and data.token_ids[:, 1:].max() == 7
    assert 0.35 < data.labels.mean() < 0.65


def test_the_first_token_is_learned_across_a_short_gap_and_not_across_a_long_one():
    # SGD with clipping and Zaremba's uniform init, 300 steps. At L = 5 every
    # cell learned the task on every seed tried; at L = 50 none did. Between
    # the two the outcome depends on the seed at this budget (at L = 10 over
    # seeds 0, 1, 2 the LSTM learned it twice, the SimpleRNN once), so no test
    # sits there: a seed-dependent result would also depend on the CPU's
    # rounding. The claim that an LSTM learns where a gateless cell
    # does not is what the README's table measures, not what a test asserts.
    settings = {"steps": 300, "num_classes": 2, "optimizer": "sgd", "learning_rate": 1.0,
                "init_scale": 0.1, "seed": 0}
    assert train_on_task("lstm", 5, **settings).accuracy > 0.95
    assert train_on_task("lstm", 50, **settings).accuracy < 0.65


def test_variants_name_cells_and_gate_subsets():
    assert parse_variant("gru") == ("gru", {})
    assert parse_variant("gated_lstm:input+forget") == ("gated_lstm", {"gates": "input+forget"})
    with pytest.raises(ValueError, match="Valid cells"):
        parse_variant("transformer")
    with pytest.raises(ValueError, match="Only gated_lstm"):
        parse_variant("lstm:input")
    with pytest.raises(ValueError, match="Valid gates"):
        parse_variant("gated_lstm:input+remember")


def test_the_command_writes_plot_and_summaries(tmp_path, capsys):
    output = tmp_path / "gradients"
    status = cli.main(["gradients", "--preset", "ptb_small", "--variants", "simple_rnn",
                       "gated_lstm:forget", "--set", "hidden_dim=8", "--set", "embedding_dim=8",
                       "--vocabulary_size", "50", "--max_distance", "6", "--positions", "2",
                       "--rows", "3", "--output_dir", str(output)])
    assert status == 0
    summary = json.loads((output / "summary.json").read_text())
    models = summary["models"]
    assert set(models) == {"ptb_small [simple_rnn]", "ptb_small [gated_lstm:forget]"}
    simple = models["ptb_small [simple_rnn]"]
    assert simple["num_layers"] == 2 and len(simple["hidden_norms"]) == 2
    assert len(simple["input_norms"]) == 7 and len(simple["spectral_radii"]) == 2
    assert models["ptb_small [gated_lstm:forget]"]["gates"] == ["forget"]
    assert (output / "gradient_flow.png").stat().st_size > 10_000
    assert "| ptb_small [simple_rnn] |" in (output / "summary.md").read_text()
    assert str(output / "summary.md") in capsys.readouterr().out


def test_a_trained_run_is_diagnosed_on_its_own_dev_windows(tmp_path):
    data = write_text(tmp_path / "ptb", "ptb.train.txt", "ptb.valid.txt", level="word")
    run = tmp_path / "run_lm"
    assert train_cli.main(["--task", "language_model", "--cell", "gru", "--data", str(data),
                           "--epochs", "1", "--batch_size", "4", "--num_steps", "5",
                           "--set", "hidden_dim=6", "--set", "embedding_dim=6",
                           "--output_dir", str(run), "--verbose", "0"]) == 0
    item = from_run(run, rows=3, length=10, seed=1)
    vocabulary = Vocabulary.load(run / "vocabulary.json")
    stream = vocabulary.encode(load_split("language_model", str(data), "dev").tokens)
    # Every row is a window of the dev stream, and its targets are the next tokens.
    for row, targets in zip(item.token_ids, item.targets):
        start = next(i for i in range(len(stream)) if stream[i:i + 10] == row.tolist()
                     and stream[i + 1:i + 11] == targets.tolist())
        assert start >= 0
    flow = gradient_flow(item.model, item.token_ids, targets=item.targets, max_distance=8,
                         num_ends=2)
    assert flow.description["cell"] == "gru" and flow.spectral_radii is None
    assert np.all(np.isfinite(flow.hidden_norms)) and flow.hidden_norms[0][0] > 0


def test_zero_and_learned_initial_state_start_alike_and_part(tmp_path):
    data = write_sst(tmp_path / "sst")
    config = resolve_config(preset="sst_lstm", data={"source": str(data)},
                            model={"hidden_dim": 8, "embedding_dim": 8, "dropout": 0.0},
                            training={"batch_size": 8, "learning_rate": 0.05})
    result = compare_initial_states(config, steps=12, seeds=(0,))
    losses = {run["variant"]: run["losses"] for run in result["runs"]}
    # The learned state starts at zero: the first step is the same model on the same batch.
    assert losses["learned"][0] == pytest.approx(losses["zero"][0], rel=1e-6)
    assert losses["learned"][-1] != pytest.approx(losses["zero"][-1], rel=1e-4)
    summary = summarize_initial_states(result, early_steps=5)
    assert set(summary) == {"zero", "learned"}
    assert 0.0 <= summary["learned"]["dev"]["accuracy"] <= 1.0

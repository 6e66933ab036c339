"""The examples' shared training loop (examples/common.py): early stopping on a dev
score with the best epoch's weights restored, the held-out dev split, and the results
rows (JSON line and README table)."""
import json

import keras
import numpy as np
import pytest

from examples_support import import_example

common = import_example("common")


def tiny_model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    return model


def batches():
    rng = np.random.RandomState(0)
    while True:
        x = rng.randn(4, 3).astype("float32")
        yield x, x.sum(axis=1, keepdims=True)


class Args:
    def __init__(self, epochs, patience, **extra):
        self.epochs, self.patience = epochs, patience
        self.__dict__.update(extra)


@pytest.mark.parametrize("scores,patience,best,run", [
    ([0.1, 0.5, 0.3, 0.2, 0.9, 0.9], 2, 2, 4),   # 2 epochs without a better score: stop
    ([0.1, 0.5, 0.3, 0.6, 0.2, 0.1], 2, 4, 6),   # a better epoch 4 resets the count
    ([0.1, 0.2, 0.3, 0.4], 1, 4, 4),             # always better: runs to --epochs
    ([0.5, 0.5, 0.4, 0.3, 0.9], 3, 1, 4),        # a tie is no improvement
])
def test_stops_after_patience_and_restores_the_best_weights(scores, patience, best, run):
    model = tiny_model()
    snapshots, queue = [], list(scores)

    def evaluate():  # the dev score of the weights this epoch ended with
        snapshots.append([w.copy() for w in model.get_weights()])
        return queue.pop(0)

    result = common.fit_with_early_stopping(model, batches(), 2, Args(len(scores), patience),
                                            evaluate, "dev_score")
    assert (result["best_epoch"], result["epochs_run"]) == (best, run)
    assert result["best"] == scores[best - 1] and result["history"] == scores[:run]
    assert len(snapshots) == run
    # The weights differ from epoch to epoch, and the model ends with the best epoch's.
    assert not np.allclose(snapshots[0][0], snapshots[-1][0])
    for restored, kept in zip(model.get_weights(), snapshots[best - 1]):
        np.testing.assert_array_equal(restored, kept)


def test_the_dev_score_reaches_the_keras_logs():
    model = tiny_model()
    queue = [0.3, 0.2]
    result = common.fit_with_early_stopping(model, batches(), 1, Args(2, 5),
                                            lambda: queue.pop(0), "dev_f1")
    assert result["history"] == [0.3, 0.2]
    assert model.history.history["dev_f1"] == [0.3, 0.2]  # Keras's History has it


def test_carved_dev_split_is_fixed_and_disjoint():
    examples = list(range(50))
    train, dev = common.carve_dev_split(examples)
    assert (len(train), len(dev)) == (45, 5)
    assert sorted(train + dev) == examples
    assert common.carve_dev_split(examples) == (train, dev)  # fixed seed
    assert len(common.carve_dev_split(list(range(20000)))[1]) == 1000  # capped
    with pytest.raises(SystemExit):
        common.carve_dev_split([1])


def test_report_writes_json_and_only_records_when_asked(tmp_path, monkeypatch):
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n<!-- results:begin -->\n" + common.RESULTS_HEADER
                      + "\n<!-- results:end -->\ntail\n", encoding="utf-8")
    monkeypatch.setattr(common, "README", str(readme))
    monkeypatch.setattr(common.record_row, "__defaults__", (str(readme),))
    run = dict(best_epoch=2, epochs_run=4, best=0.5, history=[0.1, 0.5, 0.3, 0.2],
               train_seconds=3.0)
    out = tmp_path / "r.json"
    args = Args(10, 2, batch_size=8, mixed_precision=False, record=False, json=str(out))
    before = readme.read_text(encoding="utf-8")
    row = common.report_run(args, "task_x.py", "D test", "ckpt", {"F1": 0.25}, 60.0, run)
    assert readme.read_text(encoding="utf-8") == before  # not asked
    assert json.loads(out.read_text(encoding="utf-8").splitlines()[-1]) == row
    assert (row["best_epoch"], row["epochs_run"], row["metrics"]) == (2, 4, {"F1": 0.25})
    # The lead copies a row measured elsewhere (another device) into the table.
    common.record_row(dict(row, device="NVIDIA H200 (jax gpu)", mixed_precision=True))
    common.record_row(row)
    text = readme.read_text(encoding="utf-8")
    assert "| task_x.py | D test | ckpt | " in text and "NVIDIA H200 (jax gpu), bf16 | 2/4 |" in text
    assert text.count("| task_x.py |") == 2 and text.endswith("tail\n")
    common.record_row(dict(row, metrics={"F1": 0.5}))  # same run key: replaced
    text = readme.read_text(encoding="utf-8")
    assert text.count("| task_x.py |") == 2 and "| F1 | 0.5000 |" in text
    assert not list(tmp_path.glob("*.tmp*"))

"""ChildTuning on SST-2: fine-tune all-MiniLM-L6-v2 with Adam, ChildTuning-F and
ChildTuning-D on the same small training budget, and compare test accuracy.

ChildTuning (Xu et al. 2021, "Raise a Child in Large Language Model", arXiv:2109.05687;
kexue.fm/archives/8764) updates only a "child network" of the pretrained weights by
masking gradients: ChildTuning-F draws a fresh Bernoulli(p_F) mask each step and rescales
by 1/p_F; ChildTuning-D fixes, before training, the top-p_D fraction of encoder weights by
Fisher information (squared gradients on the training data). The paper's gains are for
full fine-tuning runs (several epochs) of BERT-large, mostly in low-resource settings.
This default run is much shorter (1,000 training sentences, 32 updates, one seed), and
there both ChildTuning variants score *below* plain Adam (measured: Adam 0.779,
ChildTuning-D 0.718, ChildTuning-F 0.677 on the GLUE dev set): masking 70% of the
gradient entries leaves most weights without updates when there are only 32 of them.
Read the numbers as "it runs end to end", not as a test of the paper's claim
(``--train-size``, ``--epochs`` and several ``--seed`` values for that).

Data: SST-2 as re-split by ALPS (``../shared/data/sst2_alps``; its test set is the GLUE
SST-2 dev set, 872 sentences). Not shipped (no explicit licence).

    KERAS_BACKEND=jax python examples/task_child_tuning_sst2.py
"""
import argparse
import os
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras
import numpy as np

from kerasformer import build_transformer_model
from kerasformer.child_tuning import child_tuning_masks, fisher_information
from kerasformer.optimizers import extend_with_child_tuning
from kerasformer.snippets import sequence_padding
from kerasformer.tokenizers import Tokenizer

from common import default_minilm_checkpoint, record_result, require_path, shared_data


def load_sst2(path, limit=None, seed=0):
    """``(sentences, labels int32)`` of an ALPS SST-2 TSV (header ``sentence<TAB>label``);
    with ``limit``, a random subset of that size (fixed seed)."""
    with open(path, encoding="utf-8") as f:
        rows = [line.rstrip("\n").split("\t") for line in f][1:]
    if limit is not None:
        rows = [rows[i] for i in np.random.RandomState(seed).permutation(len(rows))[:limit]]
    return [r[0].strip() for r in rows], np.array([int(r[1]) for r in rows], "int32")


def encode(tokenizer, sentences, maxlen):
    encoded = [tokenizer.encode(s, maxlen=maxlen) for s in sentences]
    # One padded length for every batch: a single compiled program.
    return [sequence_padding([e[0] for e in encoded], length=maxlen),
            sequence_padding([e[1] for e in encoded], length=maxlen)]


def build_classifier(ckpt, seed):
    keras.utils.set_random_seed(seed)  # the same head initialisation for every variant
    bert = build_transformer_model(os.path.join(ckpt, "config.json"),
                                   os.path.join(ckpt, "model.safetensors"), model="bert")
    cls = keras.layers.Lambda(lambda h: h[:, 0], output_shape=(bert.outputs[0].shape[-1],),
                              name="CLS")(bert.outputs[0])
    out = keras.layers.Dense(2, activation="softmax", name="Classifier")(cls)
    return keras.Model(bert.inputs, out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--data", default=shared_data("sst2_alps"))
    parser.add_argument("--train-size", type=int, default=1000)
    parser.add_argument("--test-size", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--maxlen", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--reserve-p", type=float, default=0.3, help="p_F and p_D")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    start = time.perf_counter()

    ckpt = args.checkpoint or default_minilm_checkpoint()
    tokenizer = Tokenizer(os.path.join(ckpt, "vocab.txt"), do_lower_case=True)
    data = require_path(args.data, "SST-2 (ALPS) folder")
    train_s, train_y = load_sst2(os.path.join(data, "train.tsv"), args.train_size, args.seed)
    test_s, test_y = load_sst2(os.path.join(data, "test.tsv"), args.test_size, args.seed)
    train_x = encode(tokenizer, train_s, args.maxlen)
    test_x = encode(tokenizer, test_s, args.maxlen)
    loss = keras.losses.SparseCategoricalCrossentropy()
    Optimizer = extend_with_child_tuning(keras.optimizers.Adam)

    metrics = {}
    for variant in ["Adam", "ChildTuning-F", "ChildTuning-D"]:
        model = build_classifier(ckpt, args.seed)
        if variant == "Adam":
            optimizer = keras.optimizers.Adam(args.learning_rate)
        elif variant == "ChildTuning-F":
            optimizer = Optimizer(args.learning_rate, child_tuning_mode="F",
                                  reserve_p=args.reserve_p, child_tuning_seed=args.seed)
        else:
            b = args.batch_size
            batches = [([x[i:i + b] for x in train_x], train_y[i:i + b])
                       for i in range(0, len(train_y), b)]
            # The paper masks the encoder only; embeddings and the head train fully.
            fisher = fisher_information(model, loss, batches, r"Transformer-\d+-")
            optimizer = Optimizer(args.learning_rate, child_tuning_mode="D",
                                  gradient_masks=child_tuning_masks(fisher, args.reserve_p))
        model.compile(optimizer, loss, metrics=["accuracy"])
        model.fit(train_x, train_y, batch_size=args.batch_size, epochs=args.epochs,
                  shuffle=True, verbose=0)
        accuracy = model.evaluate(test_x, test_y, batch_size=128, verbose=0)[1]
        metrics[f"accuracy {variant}"] = float(accuracy)
        print(f"{variant:14s} test accuracy {accuracy:.4f}  "
              f"({time.perf_counter() - start:.0f}s)", flush=True)
    wall = time.perf_counter() - start
    print(f"backend: {keras.backend.backend()}  train: {len(train_y)}  test: {len(test_y)}  "
          f"wall time: {wall:.1f}s")
    if not args.no_record:
        record_result("task_child_tuning_sst2.py",
                      f"SST-2 {len(train_y)} train / GLUE dev", "all-MiniLM-L6-v2",
                      args.epochs, metrics, wall)


if __name__ == "__main__":
    main()

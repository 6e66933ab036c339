#! -*- coding:utf-8 -*-
# API calls of bert4keras's task_seq2seq_autotitle*.py: UniLM, a Loss layer, fit(x, None),
# AutoRegressiveDecoder beam search.
import os

import numpy as np
from kerasformer.backend import keras, K
from kerasformer.layers import Loss
from kerasformer.models import build_transformer_model
from kerasformer.optimizers import Adam
from kerasformer.snippets import sequence_padding, open
from kerasformer.snippets import DataGenerator, AutoRegressiveDecoder
from kerasformer.tokenizers import Tokenizer
from keras.models import Model

maxlen, batch_size = 24, 4
tokenizer = Tokenizer(os.environ['DROPIN_VOCAB'], do_lower_case=True)
with open(os.environ['DROPIN_DATA'], encoding='utf-8') as f:
    data = [l.strip().split('\t')[0] for l in f]
data = [(t[len(t) // 2:], t[:len(t) // 2]) for t in data]  # (content, title)


class data_generator(DataGenerator):
    def __iter__(self, random=False):
        batch_token_ids, batch_segment_ids = [], []
        for is_end, (content, title) in self.sample(random):
            token_ids, segment_ids = tokenizer.encode(content, title, maxlen=maxlen)
            batch_token_ids.append(token_ids)
            batch_segment_ids.append(segment_ids)
            if len(batch_token_ids) == self.batch_size or is_end:
                batch_token_ids = sequence_padding(batch_token_ids, length=maxlen)
                batch_segment_ids = sequence_padding(batch_segment_ids, length=maxlen)
                yield [batch_token_ids, batch_segment_ids], None
                batch_token_ids, batch_segment_ids = [], []


class CrossEntropy(Loss):
    """Cross entropy on the target part only (segment 1), as bert4keras's examples."""

    def compute_loss(self, inputs, mask=None):
        y_true, y_mask, y_pred = inputs
        y_true = y_true[:, 1:]
        y_mask = K.cast(y_mask[:, 1:], K.floatx())
        y_pred = y_pred[:, :-1]
        loss = K.sparse_categorical_crossentropy(y_true, y_pred)
        return K.sum(loss * y_mask) / K.sum(y_mask)


model = build_transformer_model(os.environ['DROPIN_CONFIG'], os.environ['DROPIN_CHECKPOINT'],
                                application='unilm', with_mlm=True)
output = CrossEntropy(2)(model.inputs + model.outputs)
model = Model(model.inputs, output)
model.compile(optimizer=Adam(1e-3))
# fit(x, None) on arrays; bert4keras's `yield x, None` from DataGenerator.forfit() on
# TensorFlow is issue 15's item 6 (the DataGenerator half), so it is not relied on here.
train_generator = data_generator(data, batch_size)
batches = list(train_generator)
token_ids = np.concatenate([x[0] for x, _ in batches])
segment_ids = np.concatenate([x[1] for x, _ in batches])
history = model.fit([token_ids, segment_ids], None, batch_size=batch_size, epochs=2,
                    verbose=0)
losses = history.history['loss']
assert np.isfinite(losses).all() and losses[-1] < losses[0], losses


class AutoTitle(AutoRegressiveDecoder):
    @AutoRegressiveDecoder.wraps(default_rtype='probas')
    def predict(self, inputs, output_ids, states):
        token_ids, segment_ids = inputs
        token_ids = np.concatenate([token_ids, output_ids], 1)
        segment_ids = np.concatenate([segment_ids, np.ones_like(output_ids)], 1)
        return self.last_token(model).predict([token_ids, segment_ids], verbose=0)

    def generate(self, text, topk=2):
        token_ids, segment_ids = tokenizer.encode(text, maxlen=maxlen)
        output_ids = self.beam_search([token_ids, segment_ids], topk=topk)
        return tokenizer.decode(output_ids)


autotitle = AutoTitle(start_id=None, end_id=tokenizer._token_end_id, maxlen=4)
print('dropin ok:', repr(autotitle.generate(data[0][0])))

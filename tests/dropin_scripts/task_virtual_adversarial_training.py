#! -*- coding:utf-8 -*-
# API calls of bert4keras's task_sentiment_virtual_adversarial_training.py: a labelled
# model and a VAT model sharing layers, VAT steps on unlabelled batches from a callback.
import os

import numpy as np
from kerasformer.backend import keras, K
from kerasformer.models import build_transformer_model
from kerasformer.optimizers import Adam
from kerasformer.snippets import sequence_padding, DataGenerator, open
from kerasformer.tokenizers import Tokenizer
from kerasformer.training import virtual_adversarial_training
from keras.layers import Lambda, Dense
from keras.utils import to_categorical

num_classes, maxlen, batch_size = 2, 16, 4
tokenizer = Tokenizer(os.environ['DROPIN_VOCAB'], do_lower_case=True)


def load_data(filename):
    D = []
    with open(filename, encoding='utf-8') as f:
        for l in f:
            text, label = l.strip().split('\t')
            D.append((text, int(label)))
    return D


train_data = load_data(os.environ['DROPIN_DATA'])
unlabeled_data = [(t, 0) for t, _ in train_data]


class data_generator(DataGenerator):
    def __iter__(self, random=False):
        batch_token_ids, batch_segment_ids, batch_labels = [], [], []
        for is_end, (text, label) in self.sample(random):
            token_ids, segment_ids = tokenizer.encode(text, maxlen=maxlen)
            batch_token_ids.append(token_ids)
            batch_segment_ids.append(segment_ids)
            batch_labels.append(label)
            if len(batch_token_ids) == self.batch_size or is_end:
                batch_token_ids = sequence_padding(batch_token_ids, length=maxlen)
                batch_segment_ids = sequence_padding(batch_segment_ids, length=maxlen)
                batch_labels = to_categorical(batch_labels, num_classes)
                yield [batch_token_ids, batch_segment_ids], batch_labels
                batch_token_ids, batch_segment_ids, batch_labels = [], [], []


bert = build_transformer_model(os.environ['DROPIN_CONFIG'], os.environ['DROPIN_CHECKPOINT'],
                               return_keras_model=False)
output = Lambda(lambda x: x[:, 0])(bert.model.outputs[0])
output = Dense(num_classes, activation='softmax', kernel_initializer=bert.initializer)(output)
model = keras.models.Model(bert.model.input, output)
model.compile(loss='kld', optimizer=Adam(2e-5), metrics=['categorical_accuracy'])
model_vat = keras.models.Model(bert.model.input, output)
model_vat.compile(loss='kld', optimizer=Adam(1e-5), metrics=['categorical_accuracy'])
virtual_adversarial_training(model_vat, 'Embedding-Token', epsilon=1, xi=10, iters=1)


# bert4keras ran the VAT steps from a callback of model.fit. On JAX, Keras 3 keeps the
# weights outside the variables while fit runs, so a second model sharing them cannot be
# trained from its callbacks; alternate train_on_batch calls instead (both backends).
# iter(): on TensorFlow forfit() returns a tf.data.Dataset here (next() on it directly is
# issue 15's item 6, the DataGenerator half).
unlabeled = iter(data_generator(unlabeled_data, batch_size).forfit())
labeled = iter(data_generator(train_data, batch_size).forfit())
before = K.eval(model.get_layer('Embedding-Token').embeddings)
vat_losses = []
for _ in range(3):
    x, y = next(labeled)
    model.train_on_batch(x, y)
    dx, dy = next(unlabeled)
    vat_losses.append(model_vat.train_on_batch(dx, dy)[0])
assert np.isfinite(vat_losses).all()
assert np.abs(K.eval(model.get_layer('Embedding-Token').embeddings) - before).max() > 0
print('dropin ok: vat loss %.5f' % vat_losses[-1])

#! -*- coding:utf-8 -*-
# API calls of bert4keras's task_iflytek_adversarial_training.py: FGM on Embedding-Token.
import os

import numpy as np
from kerasformer.backend import keras, search_layer, K
from kerasformer.models import build_transformer_model
from kerasformer.optimizers import Adam
from kerasformer.snippets import sequence_padding, DataGenerator, open, to_array
from kerasformer.tokenizers import Tokenizer
from kerasformer.training import adversarial_training
from keras.layers import Lambda, Dense

num_classes, maxlen, batch_size = 2, 16, 4
config_path = os.environ['DROPIN_CONFIG']
checkpoint_path = os.environ['DROPIN_CHECKPOINT']
dict_path = os.environ['DROPIN_VOCAB']


def load_data(filename):
    D = []
    with open(filename, encoding='utf-8') as f:
        for l in f:
            text, label = l.strip().split('\t')
            D.append((text, int(label)))
    return D


train_data = load_data(os.environ['DROPIN_DATA'])
tokenizer = Tokenizer(dict_path, do_lower_case=True)


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
                yield [batch_token_ids, batch_segment_ids], to_array(batch_labels)
                batch_token_ids, batch_segment_ids, batch_labels = [], [], []


train_generator = data_generator(train_data, batch_size)

bert = build_transformer_model(config_path, checkpoint_path, return_keras_model=False)
# bert4keras writes bert.model.output; outputs[0] is the same tensor (one output).
output = Lambda(lambda x: x[:, 0])(bert.model.outputs[0])
output = Dense(num_classes, activation='softmax', kernel_initializer=bert.initializer)(output)
model = keras.models.Model(bert.model.input, output)
model.compile(loss='sparse_categorical_crossentropy', optimizer=Adam(2e-5),
              metrics=['sparse_categorical_accuracy'])

assert search_layer(model.output, 'Embedding-Token') is model.get_layer('Embedding-Token')
adversarial_training(model, 'Embedding-Token', epsilon=0.5)
before = K.eval(search_layer(model.output, 'Embedding-Token').embeddings)
history = model.fit(train_generator.forfit(), steps_per_epoch=len(train_generator), epochs=1,
                    verbose=0)
after = K.eval(search_layer(model.output, 'Embedding-Token').embeddings)
assert np.isfinite(history.history['loss']).all()
assert np.abs(after - before).max() > 0

total, right = 0.0, 0.0
for x_true, y_true in train_generator:
    y_pred = model.predict(x_true, verbose=0).argmax(axis=1)
    total += len(y_true)
    right += (y_true == y_pred).sum()
print('dropin ok: acc %.3f' % (right / total))

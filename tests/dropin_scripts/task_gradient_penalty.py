#! -*- coding:utf-8 -*-
# API calls of bert4keras's task_iflytek_gradient_penalty.py: a K-written loss and the
# gradient penalty on the embedding (K.gradients became kerasformer.training).
import os

import numpy as np
from kerasformer.backend import keras, search_layer, K
from kerasformer.models import build_transformer_model
from kerasformer.optimizers import Adam
from kerasformer.snippets import sequence_padding, DataGenerator, open
from kerasformer.tokenizers import Tokenizer
from kerasformer.training import gradient_penalty
from keras.layers import Lambda, Dense

num_classes, maxlen, batch_size = 2, 16, 4
tokenizer = Tokenizer(os.environ['DROPIN_VOCAB'], do_lower_case=True)
with open(os.environ['DROPIN_DATA'], encoding='utf-8') as f:
    data = [(l.split('\t')[0], int(l.split('\t')[1])) for l in f]


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
                yield [batch_token_ids, batch_segment_ids], np.array(batch_labels)
                batch_token_ids, batch_segment_ids, batch_labels = [], [], []


bert = build_transformer_model(os.environ['DROPIN_CONFIG'], os.environ['DROPIN_CHECKPOINT'],
                               return_keras_model=False)
output = Lambda(lambda x: x[:, 0])(bert.model.outputs[0])
output = Dense(num_classes, activation='softmax', kernel_initializer=bert.initializer)(output)
model = keras.models.Model(bert.model.input, output)


def sparse_categorical_crossentropy(y_true, y_pred):
    y_true = K.reshape(y_true, K.shape(y_pred)[:-1])
    y_true = K.cast(y_true, 'int32')
    y_true = K.one_hot(y_true, K.shape(y_pred)[-1])
    return K.mean(K.categorical_crossentropy(y_true, y_pred))


model.compile(loss=sparse_categorical_crossentropy, optimizer=Adam(2e-5),
              metrics=['sparse_categorical_accuracy'])
assert search_layer(model.output, 'Embedding-Token') is not None
gradient_penalty(model, 'Embedding-Token', epsilon=1.0)
train_generator = data_generator(data, batch_size)
history = model.fit(train_generator.forfit(), steps_per_epoch=len(train_generator), epochs=1,
                    verbose=0)
assert np.isfinite(history.history['loss']).all()
print('dropin ok: loss %.4f' % history.history['loss'][-1])

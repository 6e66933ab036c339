#! -*- coding:utf-8 -*-
# API calls of bert4keras's basic_simple_web_serving_simbert.py: a model behind
# WebServing.route (here served on 127.0.0.1, a free port, and stopped again).
import json
import os
import threading
import time
import urllib.parse
import urllib.request

import numpy as np
from kerasformer.backend import keras, K
from kerasformer.models import build_transformer_model
from kerasformer.snippets import WebServing, sequence_padding, to_array
from kerasformer.tokenizers import Tokenizer

tokenizer = Tokenizer(os.environ['DROPIN_VOCAB'], do_lower_case=True)
bert = build_transformer_model(os.environ['DROPIN_CONFIG'], os.environ['DROPIN_CHECKPOINT'],
                               with_pool='linear')
encoder = keras.models.Model(bert.inputs, keras.layers.Lambda(
    lambda x: K.l2_normalize(x, axis=1))(bert.outputs[0]))


def similarity(text1, text2, scale=1.0):
    token_ids, segment_ids = [], []
    for text in (text1, text2):
        t, s = tokenizer.encode(text, maxlen=16)
        token_ids.append(t)
        segment_ids.append(s)
    vecs = encoder.predict([sequence_padding(token_ids), sequence_padding(segment_ids)],
                           verbose=0)
    return float(scale * (vecs[0] * vecs[1]).sum())


web = WebServing(host='127.0.0.1', port=0, server='wsgiref')
web.route('/similarity', similarity, {'text1': (None, True), 'text2': (None, True),
                                      'scale': (float, False)})
thread = threading.Thread(target=web.start, daemon=True)
thread.start()
for _ in range(200):
    if web.bound_port:
        break
    time.sleep(0.05)
try:
    base = 'http://127.0.0.1:%d/similarity?' % web.bound_port
    query = urllib.parse.urlencode({'text1': u'今天天气不错', 'text2': u'天气很好'})
    with urllib.request.urlopen(base + query, timeout=30) as r:
        result = json.loads(r.read().decode('utf-8'))
    assert result['code'] == 0, result
    assert abs(result['data'] - similarity(u'今天天气不错', u'天气很好')) < 1e-5
    with urllib.request.urlopen(base + 'text1=x', timeout=30) as r:
        assert json.loads(r.read().decode('utf-8'))['code'] == 1
finally:
    web.stop()
    thread.join(timeout=10)
assert not thread.is_alive()
print('dropin ok: similarity %.4f' % result['data'])

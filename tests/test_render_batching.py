"""Rendering + label masks, batch planning, collation, and packing correctness on a real Llama."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from tokenizers import processors
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.tokenization_python import PythonBackend

from llm_studio.config.schema import DatasetConfig
from llm_studio.data.batching import Example, collate, plan_batches, tokenize_conversations
from llm_studio.data.render import render_conversation, render_prompt, visualize
from llm_studio.errors import DatasetError

TWO_TURNS = [
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": "4"},
    {"role": "user", "content": "And 3+3?"},
    {"role": "assistant", "content": "6 of course"},
]
CHAT_RENDER = ("<|bos|><|system|>Be brief.<|end|>\n<|user|>What is 2+2?<|end|>\n<|assistant|>[[4<|end|>]]\n"
               "<|user|>And 3+3?<|end|>\n<|assistant|>[[6 of course<|end|>]]\n")


@pytest.fixture(scope="module")
def tokenizer():
    """The offline tiny model's real byte-level BPE tokenizer (chat template with {% generation %})."""
    from llm_studio.models.tiny import build_tokenizer

    return build_tokenizer()


def variant(tokenizer, template):
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = template
    return tok


def without_generation_blocks(tokenizer):
    template = tokenizer.chat_template.replace("{%- generation -%}", "").replace("{%- endgeneration -%}", "")
    assert "endgeneration" not in template and "%- generation" not in template
    return variant(tokenizer, template)


# ------------------------------------------------------------------------------------------------ render

def test_chat_template_labels_every_answer_and_its_eos(tokenizer):
    ids, mask = render_conversation(tokenizer, TWO_TURNS, system_prompt="Be brief.")
    assert visualize(tokenizer, ids, mask) == CHAT_RENDER
    assert ids.count(tokenizer.bos_token_id) == 1


def test_prefix_diff_gives_the_same_mask_as_generation_blocks(tokenizer):
    expected = render_conversation(tokenizer, TWO_TURNS, system_prompt="Be brief.")
    plain_template = without_generation_blocks(tokenizer)
    assert render_conversation(plain_template, TWO_TURNS, system_prompt="Be brief.") == expected


def test_template_that_breaks_prefixes_falls_back_to_finding_the_answers(tokenizer):
    # A header that depends on the number of messages: no render of a prefix is a prefix of the whole.
    tok = variant(tokenizer, "{{ messages|length }} turns\n" + without_generation_blocks(tokenizer).chat_template)
    ids, mask = render_conversation(tok, TWO_TURNS)
    assert visualize(tok, ids, mask) == (
        "4 turns<|bos|><|user|>What is 2+2?<|end|>\n<|assistant|>[[4<|end|>]]\n"
        "<|user|>And 3+3?<|end|>\n<|assistant|>[[6 of course<|end|>]]\n")


def test_plain_template_labels_answers_and_eos(tokenizer):
    tok = variant(tokenizer, None)
    ids, mask = render_conversation(tok, TWO_TURNS, system_prompt="Be brief.",
                                    prompt_template="Q: {prompt}\nA: ")
    assert visualize(tok, ids, mask) == ("Be brief.\nQ: What is 2+2?\nA: [[4<|end|>]]"
                                         "Q: And 3+3?\nA: [[6 of course<|end|>]]")
    prompt = render_prompt(tok, TWO_TURNS, system_prompt="Be brief.", prompt_template="Q: {prompt}\nA: ")
    assert ids[:len(prompt)] == prompt and mask[len(prompt)] == 1 and not any(mask[len(prompt) - 3:len(prompt)])


def test_render_prompt_ends_with_the_generation_prompt(tokenizer):
    prompt = render_prompt(tokenizer, TWO_TURNS)
    assert tokenizer.decode(prompt) == ("<|bos|><|user|>What is 2+2?<|end|>\n<|assistant|>4<|end|>\n"
                                        "<|user|>And 3+3?<|end|>\n<|assistant|>")
    ids, mask = render_conversation(tokenizer, TWO_TURNS)
    assert ids[:len(prompt)] == prompt and mask[len(prompt)] == 1


def test_train_on_prompts_too_labels_everything(tokenizer):
    for tok in (tokenizer, variant(tokenizer, None)):
        ids, mask = render_conversation(tok, TWO_TURNS, mask_prompt=False)
        assert mask == [1] * len(ids)


def test_bos_is_not_doubled_when_the_tokenizer_adds_one_itself(tokenizer):
    tok = copy.deepcopy(tokenizer)
    tok._tokenizer.post_processor = processors.TemplateProcessing(
        single="<|bos|> $A", special_tokens=[("<|bos|>", tokenizer.bos_token_id)])
    assert tok("hi")["input_ids"][0] == tok.bos_token_id
    bos = tok.bos_token_id
    for t in (tok, without_generation_blocks(tok), variant(tok, None)):
        ids, _ = render_conversation(t, TWO_TURNS)
        assert ids[0] == bos and ids.count(bos) == 1
        assert render_prompt(t, TWO_TURNS).count(bos) == 1


class CharTokenizer(PythonBackend):
    """A real slow (Python) tokenizer, one token per character: it gives no offsets mapping."""

    SPECIALS = ("<pad>", "<s>", "</s>")

    def __init__(self, **kwargs):
        self._vocab = {t: i for i, t in enumerate(self.SPECIALS)} | {chr(c): c for c in range(10, 127)}
        super().__init__(pad_token="<pad>", bos_token="<s>", eos_token="</s>", **kwargs)

    @property
    def vocab_size(self) -> int:
        return 127

    def get_vocab(self):
        return dict(self._vocab)

    def _tokenize(self, text, **kwargs):
        return list(text)

    def _convert_token_to_id(self, token):
        return self._vocab.get(token, 0)

    def _convert_id_to_token(self, index):
        return {i: t for t, i in self._vocab.items()}.get(index, "?")

    def convert_tokens_to_string(self, tokens):
        return "".join(tokens)


def test_tokenizer_without_offsets_still_gets_exact_masks():
    tok = CharTokenizer()
    tok.chat_template = ("{{ bos_token }}{% for m in messages %}"
                         "{{ m['role'] }}: {{ m['content'] }}{{ eos_token }}\n{% endfor %}"
                         "{% if add_generation_prompt %}assistant: {% endif %}")
    ids, mask = render_conversation(tok, TWO_TURNS)
    assert visualize(tok, ids, mask) == ("<s>user: What is 2+2?</s>\nassistant: [[4</s>]]\n"
                                         "user: And 3+3?</s>\nassistant: [[6 of course</s>]]\n")


def test_malformed_conversations_are_refused(tokenizer):
    with pytest.raises(ValueError, match="end with an assistant"):
        render_conversation(tokenizer, TWO_TURNS[:3])
    with pytest.raises(ValueError, match="expected role 'user'"):
        render_conversation(tokenizer, TWO_TURNS[1:])


# ----------------------------------------------------------------------------------------- tokenization

def test_overlong_examples_are_truncated_or_dropped(tokenizer):
    short = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    long_answer = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "word " * 40}]
    long_prompt = [{"role": "user", "content": "word " * 40}, {"role": "assistant", "content": "ok"}]
    convs = [short, long_answer, long_prompt, SimpleNamespace(messages=short)]

    examples, stats = tokenize_conversations(convs, tokenizer, DatasetConfig(max_length=16, overlong="truncate"))
    # the long prompt lost every label when cut: dropped; the long answer keeps its first labels
    assert stats == dict(n_conversations=4, n_examples=3, n_truncated=1, n_dropped=1,
                         n_tokens=sum(len(e) for e in examples),
                         n_label_tokens=sum(sum(e.mask[1:]) for e in examples))
    assert max(len(e) for e in examples) == 16

    examples, stats = tokenize_conversations(convs, tokenizer, DatasetConfig(max_length=16, overlong="drop"))
    assert (stats["n_examples"], stats["n_truncated"], stats["n_dropped"]) == (2, 0, 2)

    with pytest.raises(DatasetError, match="row 2: a training conversation must end with an assistant turn"):
        tokenize_conversations([short, short[:1]], tokenizer, DatasetConfig())


# ------------------------------------------------------------------------------------------------ plans

def lognormal_lengths(n=4000, max_length=512, seed=0):
    rng = np.random.default_rng(seed)
    return np.clip(np.round(rng.lognormal(4.5, 0.8, size=n)), 8, max_length).astype(int).tolist()


def padding_fraction(plan, lengths):
    real = computed = 0
    for batch in plan:
        rows = [sum(lengths[i] for i in row) for row in batch]
        real += sum(rows)
        computed += len(rows) * max(rows)
    return 1 - real / computed


@pytest.mark.parametrize("packing", [False, True])
@pytest.mark.parametrize("group_by_length", [False, True])
def test_plan_is_deterministic_per_epoch_and_covers_every_example_once(packing, group_by_length):
    lengths = lognormal_lengths(1000)
    kw = dict(batch_size=8, max_length=512, packing=packing, group_by_length=group_by_length, seed=3)
    plan = plan_batches(lengths, epoch=0, **kw)
    assert plan == plan_batches(lengths, epoch=0, **kw)
    assert plan != plan_batches(lengths, epoch=1, **kw)
    assert plan != plan_batches(lengths, epoch=0, **{**kw, "seed": 4})
    flat = [i for batch in plan for row in batch for i in row]
    assert sorted(flat) == list(range(len(lengths)))
    assert all(1 <= len(batch) <= 8 for batch in plan)
    assert all(type(i) is int for i in flat)
    if packing:
        assert all(sum(lengths[i] for i in row) <= 512 for batch in plan for row in batch)
    else:
        assert all(len(row) == 1 for batch in plan for row in batch)


def test_packing_and_length_grouping_cut_padding():
    lengths = lognormal_lengths(4000)
    figures = {}
    for packing in (False, True):
        for group in (False, True):
            plan = plan_batches(lengths, batch_size=8, max_length=512, packing=packing, group_by_length=group,
                                seed=0, epoch=0)
            figures[packing, group] = padding_fraction(plan, lengths)
    print("padding fraction (packing, group_by_length):", {k: round(v, 4) for k, v in figures.items()})
    assert figures[False, True] < figures[False, False] / 4
    assert figures[True, False] < 0.01 and figures[True, True] < 0.01  # >= 99% of computed tokens are real


def test_plan_refuses_an_example_longer_than_a_row():
    with pytest.raises(ValueError, match="cannot be packed"):
        plan_batches([10, 600], batch_size=2, max_length=512, packing=True, group_by_length=False, seed=0, epoch=0)


# ---------------------------------------------------------------------------------------------- collate

DOC_EXAMPLES = [Example([1, 2, 3], [0, 1, 1]), Example([4, 5], [0, 1]), Example([6, 7, 8, 9], [0, 0, 1, 1])]


def test_collate_packed_matches_the_docstring():
    batch = collate(DOC_EXAMPLES, [[0, 1], [2]], 0, packed=True)
    inputs = batch["inputs"]
    assert set(inputs) == {"input_ids", "labels", "position_ids", "use_cache"}
    assert inputs["input_ids"].tolist() == [[1, 2, 3, 4, 5], [6, 7, 8, 9, 0]]
    assert inputs["labels"].tolist() == [[-100, 2, 3, -100, 5], [-100, -100, 8, 9, -100]]
    assert inputs["position_ids"].tolist() == [[0, 1, 2, 0, 1], [0, 1, 2, 3, 0]]
    assert inputs["use_cache"] is False
    assert all(inputs[k].dtype == torch.long for k in ("input_ids", "labels", "position_ids"))
    assert (batch["n_real_tokens"], batch["n_computed_tokens"], batch["n_label_tokens"]) == (9, 10, 5)


def test_collate_padded_matches_the_docstring():
    batch = collate(DOC_EXAMPLES, [[0], [1], [2]], 0, packed=False)
    inputs = batch["inputs"]
    assert set(inputs) == {"input_ids", "labels", "attention_mask", "use_cache"}
    assert inputs["input_ids"].tolist() == [[1, 2, 3, 0], [4, 5, 0, 0], [6, 7, 8, 9]]
    assert inputs["labels"].tolist() == [[-100, 2, 3, -100], [-100, 5, -100, -100], [-100, -100, 8, 9]]
    assert inputs["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]]
    assert (batch["n_real_tokens"], batch["n_computed_tokens"], batch["n_label_tokens"]) == (9, 12, 5)


def test_collate_flattened_matches_the_docstring():
    batch = collate(DOC_EXAMPLES, [[0, 1], [2]], 0, packed=True, flatten=True)
    inputs = batch["inputs"]
    assert inputs["input_ids"].tolist() == [[1, 2, 3, 4, 5, 6, 7, 8, 9]]
    assert inputs["labels"].tolist() == [[-100, 2, 3, -100, 5, -100, -100, 8, 9]]
    assert inputs["position_ids"].tolist() == [[0, 1, 2, 0, 1, 0, 1, 2, 3]]
    for side in "qk":
        assert inputs[f"cu_seq_lens_{side}"].tolist() == [0, 3, 5, 9]
        assert inputs[f"cu_seq_lens_{side}"].dtype == torch.int32
        assert inputs[f"max_length_{side}"] == 4
    assert inputs["use_cache"] is False
    assert (batch["n_real_tokens"], batch["n_computed_tokens"], batch["n_label_tokens"]) == (9, 9, 5)


def test_flash_attention_sees_packing_only_in_a_flattened_batch():
    # Why `flatten` exists: transformers' flash-attention path detects packed rows at batch size 1 only.
    from transformers.modeling_flash_attention_utils import _is_packed_sequence

    rows = [[0, 1], [2]]
    flat = collate(DOC_EXAMPLES, rows, 0, packed=True, flatten=True)["inputs"]["position_ids"]
    batched = collate(DOC_EXAMPLES, rows, 0, packed=True)["inputs"]["position_ids"]
    assert _is_packed_sequence(flat, batch_size=1)
    assert not _is_packed_sequence(batched, batch_size=2)


# --------------------------------------------------------------------------- packing on a real Llama

@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny matmuls gain nothing from threads, and on a busy CI machine threads wait for each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_llama(vocab_size: int, attn: str) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         attn_implementation=attn)
    return LlamaForCausalLM(config).float().eval()


def summed_loss(model, inputs) -> torch.Tensor:
    """Sum (not mean) of the token losses, shifted as the model's own loss does."""
    logits = model(**{k: v for k, v in inputs.items() if k != "labels"}).logits
    return torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), inputs["labels"][:, 1:].flatten(),
                                             ignore_index=-100, reduction="sum")


@pytest.fixture(scope="module")
def conversation_examples(tokenizer):
    rng = np.random.default_rng(0)
    words = ["apple", "river", "seven", "blue", "quietly", "stone", "42", "north"]
    convs = []
    for k in range(10):
        n_turns = 1 + k % 2
        conv = []
        for _ in range(n_turns):
            conv.append({"role": "user", "content": " ".join(rng.choice(words, rng.integers(2, 12)))})
            conv.append({"role": "assistant", "content": " ".join(rng.choice(words, rng.integers(1, 10)))})
        convs.append(conv)
    examples, _ = tokenize_conversations(convs, tokenizer, DatasetConfig(max_length=128))
    return examples


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_loss_equals_the_loss_of_examples_run_alone(attn, tokenizer, conversation_examples):
    examples = conversation_examples
    model = tiny_llama(len(tokenizer), attn)
    plan = plan_batches([len(e) for e in examples], batch_size=3, max_length=128, packing=True,
                        group_by_length=False, seed=0, epoch=0)
    assert any(len(row) > 1 for batch in plan for row in batch), "the plan must actually pack"
    pad = tokenizer.pad_token_id
    with torch.no_grad():
        packed = sum(summed_loss(model, collate(examples, rows, pad, packed=True)["inputs"]) for rows in plan)
        padded = summed_loss(model, collate(examples, [[i] for i in range(len(examples))], pad,
                                            packed=False)["inputs"])
        flat = sum(summed_loss(model, collate(examples, rows, pad, packed=True, flatten=True)["inputs"])
                   for rows in plan)
        alone = sum(summed_loss(model, collate(examples, [[i]], pad, packed=False)["inputs"])
                    for i in range(len(examples)))
    assert torch.allclose(packed, alone, rtol=1e-4, atol=0)
    assert torch.allclose(padded, alone, rtol=1e-4, atol=0)
    assert torch.allclose(flat, alone, rtol=1e-4, atol=0)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_no_attention_across_packed_examples(attn):
    model = tiny_llama(100, attn)
    gen = torch.Generator().manual_seed(1)
    a, b = torch.randint(3, 100, (9,), generator=gen).tolist(), torch.randint(3, 100, (7,), generator=gen).tolist()
    a_changed = [(t + 11) % 97 + 3 for t in a]
    examples = [Example(a, [1] * 9), Example(b, [1] * 7), Example(a_changed, [1] * 9), Example([5, 6], [1, 1])]
    with torch.no_grad():
        # two rows: [A, B] and [A', B], plus a third, shorter row so padding is in play
        inputs = collate(examples, [[0, 1], [2, 1], [3]], 0, packed=True)["inputs"]
        logits = model(**{k: v for k, v in inputs.items() if k != "labels"}).logits
        alone = model(input_ids=torch.tensor([b])).logits[0]
    assert not torch.allclose(logits[0, :9], logits[1, :9])  # A and A' do differ
    torch.testing.assert_close(logits[0, 9:], logits[1, 9:], rtol=0, atol=1e-5)
    torch.testing.assert_close(logits[0, 9:], alone, rtol=0, atol=1e-5)

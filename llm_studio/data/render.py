"""Render a conversation to token ids and a parallel 0/1 label mask (1 = the model learns this token).

One renderer serves training, the dataset preview, generation prompts and tests:

    ids, mask = render_conversation(tokenizer, messages)          # training example
    print(visualize(tokenizer, ids, mask))                        # labelled spans in [[ ]]
    prompt_ids = render_prompt(tokenizer, messages)               # feed to generate() for the last answer

A conversation is a list of {"role": "system"|"user"|"assistant", "content": str}: an optional leading
system turn, then user and assistant turns alternating, ending with an assistant turn.

Two ways to format:
- the tokenizer's chat template, when it has one (a `system_prompt` becomes a system turn if the
  conversation has none). The text is rendered by the template and tokenized once, without adding
  special tokens: the template writes its own BOS, so it is never doubled.
- otherwise the configurable `prompt_template` ("{prompt}" = the user turn), then the answer, then EOS,
  for each exchange; a system text goes first on its own line; BOS only if the tokenizer adds one itself.

How the mask is found with a chat template, most exact first:
1. `{% generation %}` blocks in the template: transformers' `return_assistant_tokens_mask` marks them.
2. Prefix diff on text: the template applied to messages[:i] with the generation prompt, and to
   messages[:i+1], must both be prefixes of the full render; the characters between them are turn i's
   answer plus its closing tokens. Tokens overlapping that span are labelled (offsets of one
   tokenization of the full text, so BPE merges at boundaries cannot shift anything), and whatever
   follows the last EOS of the span (a newline, say) is not.
3. If a template breaks the prefix property (it renders earlier turns differently once more follow),
   the answer's text is searched for in the full render, after the previous answer.
In every case an EOS right after a labelled answer is labelled too: the model must learn to stop.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

Message = dict[str, str]

DEFAULT_PROMPT_TEMPLATE = "<|user|>\n{prompt}\n<|assistant|>\n"
ROLES = ("system", "user", "assistant")
_GENERATION_BLOCK = re.compile(r"\{%-?\s*generation\s*-?%\}")


def render_conversation(tokenizer: Any, messages: Sequence[Message], *, system_prompt: str | None = None,
                        prompt_template: str = DEFAULT_PROMPT_TEMPLATE,
                        mask_prompt: bool = True) -> tuple[list[int], list[int]]:
    """Token ids and a parallel 0/1 mask for a whole conversation.

    With `mask_prompt`, only assistant contents and their closing EOS are labelled (every assistant turn
    of a multi-turn conversation); without it, every token is.
    """
    messages = with_system(messages, system_prompt)
    check_conversation(messages)
    if _chat_template(tokenizer):
        ids, mask = _render_chat(tokenizer, messages)
    else:
        ids, mask = _render_plain(tokenizer, messages, prompt_template)
    if not mask_prompt:
        mask = [1] * len(ids)
    return ids, mask


def render_prompt(tokenizer: Any, messages: Sequence[Message], *, system_prompt: str | None = None,
                  prompt_template: str = DEFAULT_PROMPT_TEMPLATE) -> list[int]:
    """Ids to feed generation for the last assistant turn: every message before it + the generation prompt.

    A conversation that already ends with a user turn (a live chat) is taken as it is.
    """
    messages = with_system(messages, system_prompt)
    if messages and messages[-1]["role"] == "assistant":
        messages = messages[:-1]
    if not messages or messages[-1]["role"] != "user":
        raise ValueError("a prompt needs a user turn before the answer to generate")
    if _chat_template(tokenizer):
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        return _dedupe_bos(tokenizer, ids, [0] * len(ids))[0]
    ids, _ = _render_plain(tokenizer, messages, prompt_template)
    return ids


def visualize(tokenizer: Any, ids: Sequence[int], mask: Sequence[int]) -> str:
    """The decoded text with labelled runs wrapped in [[ ]], e.g. `<|user|>Hi<|end|>[[Hello<|end|>]]`."""
    if len(ids) != len(mask):
        raise ValueError(f"ids and mask differ in length ({len(ids)} != {len(mask)})")
    parts: list[str] = []
    start = 0
    for end in range(1, len(ids) + 1):
        if end == len(ids) or mask[end] != mask[start]:
            text = tokenizer.decode(list(ids[start:end]), skip_special_tokens=False)
            parts.append(f"[[{text}]]" if mask[start] else text)
            start = end
    return "".join(parts)


def with_system(messages: Sequence[Message], system_prompt: str | None) -> list[Message]:
    """The messages, with `system_prompt` as a leading system turn if there is none yet."""
    out = [{"role": m["role"], "content": m["content"]} for m in messages]
    if system_prompt and not (out and out[0]["role"] == "system"):
        out.insert(0, {"role": "system", "content": system_prompt})
    return out


def check_conversation(messages: Sequence[Message]) -> None:
    """Raise ValueError unless: optional system, then user/assistant alternating, ending with assistant."""
    turns = messages[1:] if messages and messages[0]["role"] == "system" else messages
    if not turns:
        raise ValueError("a conversation needs at least one user and one assistant turn")
    for k, message in enumerate(turns):
        expected = "user" if k % 2 == 0 else "assistant"
        if message.get("role") != expected:
            raise ValueError(f"turn {k + 1}: expected role {expected!r}, got {message.get('role')!r}")
        if not isinstance(message.get("content"), str):
            raise ValueError(f"turn {k + 1}: content must be text")
    if turns[-1]["role"] != "assistant":
        raise ValueError("a training conversation must end with an assistant turn")


# ---------------------------------------------------------------------------------------------- templates

def _chat_template(tokenizer: Any) -> str | None:
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):  # several named templates: the default one formats conversations
        template = template.get("default")
    return template or None


def _render_chat(tokenizer: Any, messages: list[Message]) -> tuple[list[int], list[int]]:
    eos = tokenizer.eos_token_id
    if _GENERATION_BLOCK.search(_chat_template(tokenizer) or ""):
        out = tokenizer.apply_chat_template(messages, return_dict=True, return_assistant_tokens_mask=True)
        ids, mask = list(out["input_ids"]), list(out["assistant_masks"])
        if any(mask):
            return _dedupe_bos(tokenizer, ids, _label_closing_eos(ids, mask, eos))
        # an empty mask: the blocks do not wrap the answers after all; find them by prefixes instead

    answers = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    starts = tokenizer.apply_chat_template([messages[:i] for i in answers], tokenize=False,
                                           add_generation_prompt=True)
    ends = tokenizer.apply_chat_template([messages[:i + 1] for i in answers], tokenize=False)
    full = ends[-1]
    spans: list[tuple[int, int, bool]] = []  # (start char, end char, span includes closing tokens)
    cursor, done = 0, 0  # end of the last span; messages placed so far
    for i, start, end in zip(answers, starts, ends):
        if cursor <= len(start) <= len(end) and full.startswith(end) and end.startswith(start):
            spans.append((len(start), len(end), True))
        else:
            # walk the turns before the answer first, so the answer is not matched inside a prompt
            for m in messages[done:i]:
                pos = full.find(m["content"], cursor)
                cursor = pos + len(m["content"]) if pos >= 0 else cursor
            content = messages[i]["content"]
            pos = full.find(content, cursor)
            if pos < 0 or not content:
                raise ValueError(f"cannot find assistant turn {i} in the chat template's output; "
                                 "the template changes the answer text")
            spans.append((pos, pos + len(content), False))
        cursor, done = spans[-1][1], i + 1

    ids, mask = _tokenize_with_spans(tokenizer, full, spans)
    return _dedupe_bos(tokenizer, ids, _label_closing_eos(ids, mask, eos))


def _tokenize_with_spans(tokenizer: Any, text: str,
                         spans: list[tuple[int, int, bool]]) -> tuple[list[int], list[int]]:
    """Tokenize `text` once and mark the tokens overlapping each character span."""
    eos = tokenizer.eos_token_id
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    offsets = enc.get("offset_mapping")  # Python (slow) tokenizers give none: count tokens per prefix then
    mask = [0] * len(ids)
    for start, end, trim in spans:
        if offsets is not None:
            tokens = [t for t, (s, e) in enumerate(offsets)
                      if (s < end and e > start) or (s == e and start <= s < end)]
        else:
            first, stop = (_tokens_before(tokenizer, text, c, ids) for c in (start, end))
            tokens = list(range(first, stop))
        if trim and eos is not None and any(ids[t] == eos for t in tokens):
            last_eos = max(k for k, t in enumerate(tokens) if ids[t] == eos)
            tokens = tokens[:last_eos + 1]  # the template's separator after EOS is not the answer
        for t in tokens:
            mask[t] = 1
    return ids, mask


def _tokens_before(tokenizer: Any, text: str, char: int, ids: list[int]) -> int:
    """How many of `ids` (the tokens of `text`) come before character `char`, without offsets."""
    head = tokenizer(text[:char], add_special_tokens=False)["input_ids"]
    n = 0
    while n < len(head) and n < len(ids) and head[n] == ids[n]:
        n += 1
    return n


def _label_closing_eos(ids: list[int], mask: list[int], eos: int | None) -> list[int]:
    """Label the EOS that directly follows a labelled run, if the template left it out of the span."""
    if eos is None:
        return mask
    mask = list(mask)
    for t in range(1, len(ids)):
        if ids[t] == eos and mask[t - 1] and not mask[t]:
            mask[t] = 1
    return mask


def _dedupe_bos(tokenizer: Any, ids: list[int], mask: list[int]) -> tuple[list[int], list[int]]:
    """Drop a doubled BOS (a template that writes one while the text already had one)."""
    bos = tokenizer.bos_token_id
    k = 0
    while bos is not None and k + 1 < len(ids) and ids[k] == bos and ids[k + 1] == bos:
        k += 1
    return ids[k:], mask[k:]


# ----------------------------------------------------------------------------------- plain prompt template

def _render_plain(tokenizer: Any, messages: list[Message], prompt_template: str) -> tuple[list[int], list[int]]:
    """`prompt_template` + answer + EOS per exchange; a system text first, on its own line.

    Segments are tokenized separately (one batched call), exactly as `render_prompt` does for generation,
    so a prompt's ids are always a prefix of the training ids.
    """
    if "{prompt}" not in prompt_template:
        raise ValueError("prompt_template must contain {prompt}")
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no EOS token to end answers with")
    texts: list[str] = []
    labelled: list[bool] = []
    for m in messages:
        if m["role"] == "system":
            texts.append(m["content"] + "\n")
        elif m["role"] == "user":
            texts.append(prompt_template.replace("{prompt}", m["content"]))  # replace: braces in text are safe
        else:
            texts.append(m["content"])
        labelled.append(m["role"] == "assistant")
    pieces = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    ids = [tokenizer.bos_token_id] if _adds_bos(tokenizer) else []
    mask = [0] * len(ids)
    for piece, is_answer in zip(pieces, labelled):
        if is_answer:
            piece = [*piece, eos]
        ids.extend(piece)
        mask.extend([int(is_answer)] * len(piece))
    return ids, mask


def _adds_bos(tokenizer: Any) -> bool:
    """True if the tokenizer's own encoding starts with BOS: the model was trained to see one."""
    cached = getattr(tokenizer, "_llm_studio_adds_bos", None)
    if cached is None:
        bos = tokenizer.bos_token_id
        cached = bos is not None and tokenizer("a")["input_ids"][:1] == [bos]
        try:
            tokenizer._llm_studio_adds_bos = cached  # probing once per tokenizer keeps rendering fast
        except AttributeError:
            pass
    return cached

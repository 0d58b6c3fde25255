"""The Llama-3 chat template and special tokens, used by the tiny base and as the fallback renderer.

The ``{% generation %}`` markers let transformers return an assistant-token mask
(``return_assistant_tokens_mask``) so the loss covers the assistant turn only;
they render to nothing.
"""
BOS = "<|begin_of_text|>"
EOS = "<|end_of_text|>"
START_HEADER = "<|start_header_id|>"
END_HEADER = "<|end_header_id|>"
EOT = "<|eot_id|>"
PAD = "<|finetune_right_pad_id|>"
SPECIAL_TOKENS = [BOS, EOS, START_HEADER, END_HEADER, EOT, PAD]

LLAMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] | trim + '<|eot_id|>' }}{% endgeneration %}"
    "{% else %}"
    "{{ message['content'] | trim + '<|eot_id|>' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)


def render_llama3(messages: list[dict], add_generation_prompt: bool = False) -> str:
    """Render without a tokenizer (same output as the template); used before a base model exists."""
    parts = [BOS]
    for m in messages:
        parts.append(f"{START_HEADER}{m['role']}{END_HEADER}\n\n{m['content'].strip()}{EOT}")
    if add_generation_prompt:
        parts.append(f"{START_HEADER}assistant{END_HEADER}\n\n")
    return "".join(parts)


# ChatML (SmolLM2, Qwen): a turn is <|im_start|>role\n ... <|im_end|>\n, and <|im_end|> ends the
# turn. SmolLM2's own template (same text, its default system prompt included) plus the
# `{% generation %}` markers, so training's loss covers the assistant turn and its <|im_end|>.
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
CHATML_PAD = "<|endoftext|>"
SMOLLM2_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
CHATML_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\n" + SMOLLM2_SYSTEM + "<|im_end|>\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\n' }}"
    "{% else %}"
    "{{ message['content'] + '<|im_end|>\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

def render_chatml(messages: list[dict], add_generation_prompt: bool = False) -> str:
    """CHATML_CHAT_TEMPLATE without Jinja (same output, tested): cleaning renders every row."""
    parts = [] if messages and messages[0]["role"] == "system" else [f"{IM_START}system\n{SMOLLM2_SYSTEM}{IM_END}\n"]
    parts += [f"{IM_START}{m['role']}\n{m['content']}{IM_END}\n" for m in messages]
    if add_generation_prompt:
        parts.append(f"{IM_START}assistant\n")
    return "".join(parts)


# Per template family: the markers the template emits and the token that ends a turn.
TEMPLATE_FAMILIES = {
    # A Llama-3 base (not instruct) checkpoint names <|end_of_text|> as EOS; the server stops on both.
    "llama3": {"markers": [BOS, START_HEADER, END_HEADER, EOT], "end_of_turn": EOT, "accepted_eos": [EOT, EOS]},
    "chatml": {"markers": [IM_START, IM_END], "end_of_turn": IM_END},
}


def template_family(template: str | None) -> str | None:
    if not template:
        return None
    if IM_START in template:
        return "chatml"
    if START_HEADER in template:
        return "llama3"
    return None

#!/usr/bin/env python3
"""Renders chat templates with Python jinja2 configured exactly as transformers configures it, producing the
expected outputs that lora4j's ChatTemplate (Jinjava-based) must reproduce byte for byte.

The environment mirrors transformers' _compile_jinja_template: ImmutableSandboxedEnvironment(trim_blocks=True,
lstrip_blocks=True, extensions=[loopcontrols, a {% generation %} tag]), a tojson filter that is json.dumps with
ensure_ascii=False (and indent / separators / sort_keys), and the globals raise_exception (raises TemplateError)
and strftime_now. Variables are those apply_chat_template passes: messages (list of {"role", "content"} dicts),
tools=None, documents=None, add_generation_prompt, the special tokens, plus extra keyword arguments.

Templates: every ../shared/assets/chat-templates/*.jinja, the chat_template of
../shared/assets/tokenizers/llama3/tokenizer_config.json, and the feature templates in
lora4j-core/src/test/resources/dev/lora4j/chat/features/*.jinja (Python semantics that Jinjava lacks natively).

Usage, from the repository root (python3 with jinja2 >= 3.1):
    python3 tools/render_chat_templates.py lora4j-core/src/test/resources/dev/lora4j/chat/expected-renders.json
"""
import glob
import json
import os
import sys
from datetime import datetime

import jinja2
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.normpath(os.path.join(ROOT, "..", "shared"))
FEATURES = os.path.join(ROOT, "lora4j-core", "src", "test", "resources", "dev", "lora4j", "chat", "features")


class GenerationTag(Extension):
    """{% generation %}...{% endgeneration %} renders its body unchanged, as transformers' AssistantTracker does."""
    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

    def _render(self, caller):
        return caller()


def environment():
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt):
        return datetime.now().strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[GenerationTag, loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


SYSTEM = {"role": "system", "content": "You are a careful assistant. Answer briefly."}
CONVERSATIONS = {
    "user": [{"role": "user", "content": "Hello!"}],
    "system-user": [SYSTEM, {"role": "user", "content": "What is the capital of France?"}],
    "multi-turn": [
        {"role": "user", "content": "Hi, who are you?"},
        {"role": "assistant", "content": "I am an assistant."},
        {"role": "user", "content": "Tell me a joke."},
    ],
    "system-multi-turn": [
        SYSTEM,
        {"role": "user", "content": "Count to three."},
        {"role": "assistant", "content": "One, two, three."},
        {"role": "user", "content": "Now backwards."},
        {"role": "assistant", "content": "Three, two, one."},
    ],
    "tricky-content": [
        {"role": "system", "content": "  Spaces around; /no_think please \n"},
        {"role": "user", "content": "  Quotes \" ' and braces {{ x }} {% raw %} \u00fcml\u00e4ut \U0001f680\n\n"},
        {"role": "assistant", "content": "\n\nLeading newlines, trailing spaces   "},
        {"role": "user", "content": "Tabs\tand\r\nCRLF"},
    ],
    "system-only-user-empty": [SYSTEM, {"role": "user", "content": ""}],
    "consecutive-users": [{"role": "user", "content": "one"}, {"role": "user", "content": "two"}],
    "system-in-the-middle": [{"role": "user", "content": "one"}, SYSTEM, {"role": "user", "content": "two"}],
}

# Special tokens each family's tokenizer_config.json declares (what apply_chat_template passes).
TOKENS = {
    "HuggingFaceTB-SmolLM3-3B": {"bos_token": None, "eos_token": "<|im_end|>"},
    "Qwen-Qwen2.5-7B-Instruct": {"bos_token": None, "eos_token": "<|im_end|>"},
    "google-gemma-2-2b-it": {"bos_token": "<bos>", "eos_token": "<eos>"},
    "meta-llama-Llama-3.1-8B-Instruct": {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
    "microsoft-Phi-3.5-mini-instruct": {"bos_token": "<s>", "eos_token": "<|endoftext|>"},
    "mistralai-Mistral-Nemo-Instruct-2407": {"bos_token": "<s>", "eos_token": "</s>"},
    "llama3-tokenizer-config": {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"},
}

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city, in \u00b0C.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name, e.g. \"Z\u00fcrich\""},
                "days": {"type": "integer", "enum": [1, 2, 3]},
            },
            "required": ["city"],
        },
        "return": {"type": "number"},
    },
}

EXTRAS = {
    "HuggingFaceTB-SmolLM3-3B": [{}, {"enable_thinking": False}],
    "meta-llama-Llama-3.1-8B-Instruct": [{}, {"date_string": "01 Jan 2025"}, {"tools": [WEATHER_TOOL]},
                                         {"tools": [WEATHER_TOOL], "tools_in_user_message": False}],
    "Qwen-Qwen2.5-7B-Instruct": [{}, {"tools": [WEATHER_TOOL, {"type": "function", "function": {"name": "noop", "parameters": {}}}]}],
    "mistralai-Mistral-Nemo-Instruct-2407": [{}, {"tools": [WEATHER_TOOL]}],
}


def templates():
    found = []
    for path in sorted(glob.glob(os.path.join(SHARED, "assets", "chat-templates", "*.jinja"))):
        with open(path, encoding="utf-8") as f:
            found.append((os.path.basename(path)[:-len(".jinja")], "shared:chat-templates/" + os.path.basename(path), f.read()))
    with open(os.path.join(SHARED, "assets", "tokenizers", "llama3", "tokenizer_config.json"), encoding="utf-8") as f:
        found.append(("llama3-tokenizer-config", "shared:tokenizers/llama3/tokenizer_config.json", json.load(f)["chat_template"]))
    for path in sorted(glob.glob(os.path.join(FEATURES, "*.jinja"))):
        with open(path, encoding="utf-8") as f:
            found.append(("feature-" + os.path.basename(path)[:-len(".jinja")], "resource:features/" + os.path.basename(path), f.read()))
    return found


def render(env, source, variables):
    try:
        return {"output": env.from_string(source).render(**variables)}
    except jinja2.exceptions.TemplateError as e:
        return {"error": str(e)}


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    env = environment()
    cases = []
    for name, origin, source in templates():
        tokens = TOKENS.get(name, {"bos_token": "<s>", "eos_token": "</s>"})
        for extra in EXTRAS.get(name, [{}]):
            for conv_name, messages in CONVERSATIONS.items():
                for gen in (True, False):
                    # apply_chat_template passes the special tokens the tokenizer has (none that are unset).
                    present = {k: v for k, v in tokens.items() if v is not None}
                    variables = dict(messages=messages, tools=None, documents=None, add_generation_prompt=gen, **present)
                    variables.update(extra)
                    case = {"template": name, "source": origin, "conversation": conv_name, "messages": messages,
                            "add_generation_prompt": gen, "bos_token": tokens["bos_token"], "eos_token": tokens["eos_token"],
                            "extra": extra}
                    case.update(render(env, source, variables))
                    cases.append(case)
    with open(sys.argv[1], "w", encoding="utf-8") as out:
        json.dump({"jinja2_version": jinja2.__version__, "cases": cases}, out, ensure_ascii=False, indent=1)
        out.write("\n")
    print("wrote %d cases (%d errors) to %s" % (len(cases), sum("error" in c for c in cases), sys.argv[1]))


if __name__ == "__main__":
    main()

"""The model's own chat format, cut into the pieces an incremental conversation needs.

The engine keeps the KV cache between turns, so it never re-renders the whole
conversation; it needs the system block (evaluated once), the text around one
user turn (with the generation prompt), and the text that closes the model's
turn. These pieces are cut out of the chat template embedded in the GGUF by
rendering it with sentinel messages, so a template update in a new model file is
followed automatically. Thinking stays off: the template is rendered without
``enable_thinking``, which for Gemma 4 also pre-fills an empty thought block.
Files without a template fall back to Gemma 4's documented format.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from jinja2.sandbox import ImmutableSandboxedEnvironment

from .tool_calls import render_declaration

# What the chat template's ``tools=`` takes: OpenAI-style function declarations.
ToolDeclarations = Sequence[Mapping[str, Any]]

USER_SENTINEL = "\x00user-content\x00"
REPLY_SENTINEL = "\x00model-reply\x00"
SYSTEM_SENTINEL = "\x00system-prompt\x00"


@dataclass(frozen=True)
class ChatFormat:
    system_prefix: str  # BOS and the opening of the system turn
    system_suffix: str  # closes the system turn
    user_prefix: str  # opens a user turn
    user_suffix: str  # closes it and opens the model's turn (the generation prompt)
    turn_end: str  # closes the model's turn
    # Renders the system block with tool declarations (the template's ``tools=``);
    # None: Gemma 4's documented declaration format.
    system_with_tools: Callable[[str, ToolDeclarations], str] | None = field(default=None, compare=False)

    def system_block(self, system_prompt: str, tools: ToolDeclarations = ()) -> str:
        """The system turn; ``tools`` are declared in it, as the model was trained."""
        if not tools:
            return self.system_prefix + system_prompt.strip() + self.system_suffix
        if self.system_with_tools is not None:
            return self.system_with_tools(system_prompt.strip(), tools)
        declarations = "".join(render_declaration(tool) for tool in tools)
        return self.system_prefix + system_prompt.strip() + declarations + self.system_suffix

    def user_turn(self, content: str) -> str:
        return self.user_prefix + content + self.user_suffix

    @classmethod
    def gemma4_documented(cls, bos: str) -> ChatFormat:
        return cls(
            system_prefix=bos + "<|turn>system\n",
            system_suffix="<turn|>\n",
            user_prefix="<|turn>user\n",
            user_suffix="<turn|>\n<|turn>model\n<|channel>thought\n<channel|>",
            turn_end="<turn|>\n",
        )

    @classmethod
    def from_template(cls, template: str | None, bos: str) -> ChatFormat:
        if not template:
            return cls.gemma4_documented(bos)
        compiled = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).from_string(template)

        def render(messages: list[dict[str, str]], add_generation_prompt: bool, tools: ToolDeclarations = ()) -> str:
            return compiled.render(
                messages=messages, add_generation_prompt=add_generation_prompt, bos_token=bos, eos_token="",
                tools=[dict(tool) for tool in tools] or None,
            )

        def system_with_tools(system_prompt: str, tools: ToolDeclarations) -> str:
            return render([{"role": "system", "content": system_prompt}], add_generation_prompt=False, tools=tools)

        system = {"role": "system", "content": SYSTEM_SENTINEL}
        user = {"role": "user", "content": USER_SENTINEL}
        reply = {"role": "assistant", "content": REPLY_SENTINEL}
        system_only = render([system], add_generation_prompt=False)
        with_question = render([system, user], add_generation_prompt=True)
        with_answer = render([system, user, reply], add_generation_prompt=False)

        system_prefix, system_suffix = _split_once(system_only, SYSTEM_SENTINEL)
        system_block = system_prefix + SYSTEM_SENTINEL + system_suffix
        if not with_question.startswith(system_block):
            raise ValueError("chat template does not render the system turn as a prefix of the conversation")
        user_prefix, user_suffix = _split_once(with_question[len(system_block) :], USER_SENTINEL)
        answer_tail = _split_once(with_answer, REPLY_SENTINEL)[1]
        return cls(system_prefix, system_suffix, user_prefix, user_suffix, answer_tail, system_with_tools)


def _split_once(text: str, sentinel: str) -> tuple[str, str]:
    before, found, after = text.partition(sentinel)
    if not found:
        raise ValueError("chat template dropped a message")
    return before, after

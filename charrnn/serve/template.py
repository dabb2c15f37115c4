"""Chat templates: how a conversation (OpenAI's `messages`) becomes the text a character model
continues. A character model has no chat format of its own, only the kind of text it learnt,
so the template says how to write a conversation in that kind of text (docs/serving.md).

A template is four things: how each message is written (`message`, with `{role}`, `{name}` and
`{content}`), how the model's turn begins (`reply`, with `{role}` and `{name}`), where its turn
ends (`stop`, added to a request's stop strings) and a name for each role whose messages carry
none (`names`, else the role in capitals). Presets:

- `plain` (the default): the messages' contents one after another, as they are; the model
  continues the text. A one-message chat is a completion.
- `play`: a speaker's name, a colon and a newline before each message and a blank line after,
  as Tiny Shakespeare writes a play; the model speaks as `assistant` (or the name of a last,
  unfinished assistant message) until a blank line.

A last assistant message is continued, not closed: its content is where the model's turn
begins (`{"role": "assistant", "name": "JULIET", "content": ""}` picks who speaks next).
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError

_CUT = "\x00"  # where a continued message's content ends (never in a format string)


@dataclass(frozen=True)
class ChatTemplate:
    # fmt: off
    message: str = "{content}"  # each message, with {role}, {name} and {content}
    reply: str = ""             # then the model's turn begins, with {role} and {name}
    stop: tuple = ()            # the model's turn ends at any of these
    names: dict = field(default_factory=dict)  # {role: name} for messages without a name
    source: str = "plain"       # a preset's name, or where the template came from
    # fmt: on

    def name_of(self, role, name=None):
        return name if name else self.names.get(role, role.upper())

    def render(self, messages):
        """The text of messages [(role, name or None, content)], ending where the model writes."""
        out = []
        last = len(messages) - 1
        for i, (role, name, content) in enumerate(messages):
            fields = dict(role=role, name=self.name_of(role, name))
            if i == last and role == "assistant":  # continued: no reply, no closing
                head = self.message.format(content=_CUT, **fields).split(_CUT)[0]
                return "".join(out) + head + content
            out.append(self.message.format(content=content, **fields))
        return "".join(out) + self.reply.format(role="assistant", name=self.name_of("assistant"))

    def describe(self):
        """What a model expects, for /v1/models."""
        return {
            "source": self.source,
            "message": self.message,
            "reply": self.reply,
            "stop": list(self.stop),
            "names": dict(self.names),
        }


PRESETS = {
    "plain": ChatTemplate(),
    "play": ChatTemplate("{name}:\n{content}\n\n", "{name}:\n", ("\n\n",), {}, "play"),
}


def load(spec):
    """The ChatTemplate a --chat-template value names: a preset, inline JSON, or a JSON file
    with the fields message, reply, stop and names; UsageError if it is none of them."""
    if spec in PRESETS:
        return PRESETS[spec]
    if spec.lstrip().startswith("{"):
        text, source = spec, "inline"
    else:
        try:
            text, source = Path(spec).read_text(), spec
        except OSError as e:
            raise UsageError(
                f"--chat-template {spec!r} is not a preset ({', '.join(PRESETS)}) "
                f"nor a readable JSON file ({e.strerror})"
            ) from None
    try:
        d = json.loads(text)
    except ValueError as e:
        raise UsageError(f"--chat-template {source}: not JSON ({e})") from None
    if not isinstance(d, dict) or set(d) - {"message", "reply", "stop", "names"}:
        raise UsageError(f"--chat-template {source}: an object with message, reply, stop and names")
    stop = d.get("stop", [])
    stop = [stop] if isinstance(stop, str) else stop
    names = d.get("names", {})
    ok = (
        isinstance(d.get("message", ""), str)
        and isinstance(d.get("reply", ""), str)
        and isinstance(stop, list)
        and all(isinstance(s, str) and s for s in stop)
        and isinstance(names, dict)
        and all(isinstance(v, str) for v in names.values())
    )
    if not ok:
        raise UsageError(
            f"--chat-template {source}: message and reply are strings, stop a string or a "
            "list of them, names an object of strings"
        )
    t = ChatTemplate(d.get("message", "{content}"), d.get("reply", ""), tuple(stop), names, source)
    try:
        t.render([("system", None, "s"), ("user", "U", "u"), ("assistant", None, "a"), ("user", None, "v")])
    except (KeyError, IndexError, ValueError) as e:
        raise UsageError(
            f"--chat-template {source}: a format string may use only {{role}}, {{name}} and "
            f"{{content}} ({type(e).__name__}: {e})"
        ) from None
    return t


def for_models(specs, names):
    """{model id: ChatTemplate} of --chat-template values, each `TEMPLATE` (every model) or
    `ID=TEMPLATE` (the model ID); a later value wins. Models not named get `plain`."""
    out = dict.fromkeys(names, PRESETS["plain"])
    for spec in specs:
        model, eq, rest = spec.partition("=")
        if eq and model in out:
            out[model] = load(rest)
        elif eq and not spec.lstrip().startswith("{") and model and not Path(spec).exists():
            raise UsageError(
                f"--chat-template {spec!r}: no model {model!r} is served (they are {', '.join(names)})"
            )
        else:
            t = load(spec)
            out = dict.fromkeys(names, t)
    return out

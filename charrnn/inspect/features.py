"""Per-character features of a text, for ranking units by correlation (probe.Correlate).

Each is one number per character, taken *after* reading that character, as the states are: the
quotation mark that opens a string is inside it, the one that closes it is outside.

    string         inside a Python string literal, by a small lexer that knows comments,
                   escapes and triple quotes (Python source)
    comment        inside a Python # comment (Python source)
    quote          inside double quotation marks (" or the curly pair), across lines: prose
    brackets       depth of ( [ { on any text: every bracket counts
    python-brackets  depth of ( [ { outside Python strings and comments (Python source: on
                   other text a '#', as in "(Closes: #1034958)", would hide the ')' after it)
    line-position  characters since the last newline
    indent         leading whitespace of the current line, so far
    re:PATTERN     inside any match of a regular expression; ^ and $ match at every line's
                   start and end (re.MULTILINE), as a text is read line by line
"""

import re

import numpy as np

from ..errors import ConfigError

FEATURES = ("string", "comment", "quote", "brackets", "python-brackets", "line-position", "indent")


def python_strings(text):
    """(inside a string literal, outside strings and comments): two bool arrays (N,).

    A small lexer: '#' starts a comment to the end of the line; ' and " open a string, tripled
    a triple-quoted one; a backslash escapes the next character; an unterminated single-quoted
    string ends at the newline (so a stray apostrophe costs at most a line)."""
    n = len(text)
    inside = np.zeros(n, bool)
    code = np.zeros(n, bool)
    i = 0
    while i < n:
        ch = text[i]
        if ch == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end  # the newline itself is code again
        elif ch in "'\"":
            q = text[i : i + 3] if text[i : i + 3] == ch * 3 else ch
            j = i + len(q)
            while j < n:
                if text[j] == "\\":
                    j += 2
                elif text.startswith(q, j):
                    break
                elif text[j] == "\n" and len(q) == 1:
                    break
                else:
                    j += 1
            j = min(j, n)
            inside[i:j] = True  # opening quote in, closing quote (or newline) out
            i = j + len(q) if j < n and text[j] != "\n" else j
        else:
            code[i] = True
            i += 1
    return inside, code


def comment(text):
    """Inside a Python comment, from its '#' to the end of the line."""
    inside, code = python_strings(text)
    return ~(inside | code)


def quotes(text):
    """Inside double quotation marks (" or the curly pair), across lines, for prose."""
    inside = np.zeros(len(text), bool)
    state = False
    for t, ch in enumerate(text):
        if ch == "\u201c":
            state = True
        elif ch == "\u201d":
            state = False
        elif ch == '"':
            state = not state
        inside[t] = state
    return inside


def bracket_depth(text, python=False):
    """Depth of ( [ { after each character, never below 0: every bracket counts, or (python)
    those outside Python strings and comments."""
    code = python_strings(text)[1] if python else np.ones(len(text), bool)
    depth = np.zeros(len(text))
    d = 0
    for t, ch in enumerate(text):
        if code[t]:
            if ch in "([{":
                d += 1
            elif ch in ")]}":
                d = max(d - 1, 0)
        depth[t] = d
    return depth


def line_position(text):
    """Characters since the last newline: 0 at a newline, 1 at a line's first character."""
    pos = np.zeros(len(text))
    col = 0
    for t, ch in enumerate(text):
        col = 0 if ch == "\n" else col + 1
        pos[t] = col
    return pos


def indent(text):
    """The current line's leading spaces and tabs, as far as read (0 at a newline)."""
    out = np.zeros(len(text))
    width, leading = 0, True
    for t, ch in enumerate(text):
        if ch == "\n":
            width, leading = 0, True
        elif leading and ch in " \t":
            width += 1
        else:
            leading = False
        out[t] = width
    return out


def regex_feature(text, pattern):
    """Inside any (non-empty) match of the regular expression, ^ and $ at every line's ends."""
    try:
        rx = re.compile(pattern, re.MULTILINE)
    except re.error as e:
        raise ConfigError(f"bad regular expression {pattern!r}: {e}") from None
    inside = np.zeros(len(text), bool)
    for m in rx.finditer(text):
        inside[m.start() : m.end()] = True
    return inside


def check_feature(name):
    """Raise ConfigError unless name is one of FEATURES or re:PATTERN with a valid pattern."""
    if name.startswith("re:"):
        regex_feature("", name[3:])
    elif name not in FEATURES:
        raise ConfigError(f"unknown feature {name!r}: use one of {', '.join(FEATURES)} or re:PATTERN")


def feature(name, text):
    """The named feature (one of FEATURES, or 're:PATTERN') of text, as floats (N,)."""
    check_feature(name)
    if name.startswith("re:"):
        return regex_feature(text, name[3:]).astype(np.float64)
    fns = {
        "string": lambda s: python_strings(s)[0],
        "comment": comment,
        "quote": quotes,
        "brackets": bracket_depth,
        "python-brackets": lambda s: bracket_depth(s, python=True),
        "line-position": line_position,
        "indent": indent,
    }
    return np.asarray(fns[name](text), np.float64)

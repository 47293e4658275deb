"""Bounds on what users feed in (image sizes, row lengths, chat templates), so that one bad input becomes a
clear message naming it instead of a hang, an out-of-memory kill or a traceback.

Chat templates are code from the model's folder: a loop that never ends would hang data checks, training and
chat alike. `check_chat_template` renders a template once on tiny conversations in a Jinja sandbox that
counts its steps and the size of what it builds, before transformers renders it for real.
"""

from __future__ import annotations

import contextlib
import functools
import math
import re
import time
from collections.abc import Iterator
from typing import Any

from trainer_core.base.errors import VlmtuneError

# 40 megapixels (e.g. 7300 x 5500) is past any camera a dataset is likely to hold; an 11000 x 11000 image
# costs ~1.3 GB per decode in a training step, and Pillow refuses ~179 M outright.
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000
# ~250k tokens: far past any training.max_length, so a row this long is a mistake (a file pasted in a cell).
MAX_ROW_CHARS = 1_000_000


# --- images ---------------------------------------------------------------------------------------------

class ImageTooLarge(Exception):
    """Pillow refused to open an image as a decompression bomb; `pixels` is its size when Pillow said it."""

    def __init__(self, pixels: int | None, detail: str):
        super().__init__(detail)
        self.pixels = pixels


@contextlib.contextmanager
def open_image_header(src: Any) -> Iterator[Any]:
    """The image opened lazily: its size comes from the header, no pixel is decoded. Pillow's bomb warning is
    silenced (the caller applies its own pixel limit); its bomb error becomes ImageTooLarge."""
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(src) as im:
                yield im
    except Image.DecompressionBombError as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))
        raise ImageTooLarge(int(found.group(1)) if found else None, str(exc)) from None


# --- chat templates -------------------------------------------------------------------------------------

TEMPLATE_STEPS = 200_000  # loop turns, calls, lookups: a real template on a tiny chat needs a few hundred
TEMPLATE_SECONDS = 2.0
TEMPLATE_SIZE = 1_000_000  # the longest string or list one operation may build, and the output's length
TEMPLATE_BUILT = 20 * TEMPLATE_SIZE  # all strings and lists built, together
JINJA_MAX_RANGE = 100_000  # transformers' sandbox refuses longer ranges; say so here, not in a traceback


class ChatTemplateError(VlmtuneError):
    """A model's chat template that does not finish (a runaway loop, an enormous string)."""


class _Runaway(BaseException):
    # BaseException: Jinja catches Exception in places (constant folding while compiling), and the verdict
    # must get out of the render.
    pass


class _Budget:
    def __init__(self) -> None:
        self.steps = 0
        self.built = 0
        self.deadline = time.monotonic() + TEMPLATE_SECONDS

    def tick(self) -> None:
        self.steps += 1
        if self.steps > TEMPLATE_STEPS:
            raise _Runaway(f"it ran past {TEMPLATE_STEPS:,} steps (a loop that does not end?)")
        if self.steps % 512 == 0 and time.monotonic() > self.deadline:
            raise _Runaway(f"it ran past {TEMPLATE_SECONDS:g} seconds")

    def size(self, n: int, what: str = "a value") -> None:
        if n > TEMPLATE_SIZE:
            raise _Runaway(f"it builds {what} of {n:,} items (the limit is {TEMPLATE_SIZE:,})")

    def made(self, value: Any) -> Any:
        if isinstance(value, (str, list, tuple, dict)):
            self.size(len(value))
            self.built += len(value)
            if self.built > TEMPLATE_BUILT:
                raise _Runaway(f"it built over {TEMPLATE_BUILT:,} characters in all")
        return value

    def args(self, values: Any) -> None:
        """Sizes asked for up front (`range(n)`, `center(n)`, `lipsum(n)`), refused before they are built."""
        for v in values:
            if isinstance(v, int) and not isinstance(v, bool) and abs(v) > TEMPLATE_SIZE:
                raise _Runaway(f"it asks for a count or size of {v:,} (the limit is {TEMPLATE_SIZE:,})")
            if isinstance(v, (str, list, tuple, dict)):
                self.size(len(v))


# "%0999999999d" or "{:>999999999}": a field padded to a huge width, built before any size could be checked
_WIDE_FORMAT = re.compile(r"%[-+ #0]*\d{7,}|\{[^{}]*:[^{}]*?\d{7,}")


def _check_format(text: Any) -> None:
    if isinstance(text, str) and _WIDE_FORMAT.search(text):
        raise _Runaway(f"it formats a field over {TEMPLATE_SIZE:,} characters wide")


class _CountedRange:
    """`range` for templates: each turn of a loop over it counts a step."""

    def __init__(self, budget: _Budget, *args: int):
        self._budget, self._range = budget, range(*args)
        if len(self._range) > JINJA_MAX_RANGE:
            raise _Runaway(f"it asks for range() of {len(self._range):,} items; the sandbox that renders "
                           f"chat templates allows {JINJA_MAX_RANGE:,}")

    def __iter__(self) -> Iterator[int]:
        for i in self._range:
            self._budget.tick()
            yield i

    def __reversed__(self) -> Iterator[int]:
        for i in reversed(self._range):
            self._budget.tick()
            yield i

    def __len__(self) -> int:
        return len(self._range)

    def __getitem__(self, index: Any) -> Any:
        got = self._range[index]  # a slice of a range is a range: keep counting its turns
        return _CountedRange(self._budget, got.start, got.stop, got.step) if isinstance(got, range) else got

    def __contains__(self, value: Any) -> bool:
        return value in self._range


def _counted(budget: _Budget, func: Any) -> Any:
    """A filter or test that counts a step, refuses huge sizes asked for, and counts what it built."""

    @functools.wraps(func)  # keeps Jinja's pass_context / pass_environment marks
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        budget.tick()
        budget.args([*args, *kwargs.values()])
        return budget.made(func(*args, **kwargs))

    return wrapper


def _binop_guard(budget: _Budget, op: str, left: Any, right: Any) -> None:
    """Refuse `'x' * 10**12`, `10 ** (10 ** 10)` and `'%0999999999d' % 1` before Python builds them."""
    if op == "**" and isinstance(left, int) and isinstance(right, int) and abs(left) > 1 and right > 0:
        digits = right * math.log10(abs(left))
        if digits > 20_000:
            raise _Runaway(f"it computes {left} ** {right}, a number of ~{digits:,.0f} digits")
    if op == "*":
        for seq, n in ((left, right), (right, left)):
            if isinstance(seq, (str, list, tuple)) and isinstance(n, int):
                budget.size(len(seq) * n)
    if op == "%":
        _check_format(left)


def _guarded_class(budget: _Budget) -> Any:
    """An ImmutableSandboxedEnvironment (as transformers uses) whose every call, lookup, operator and `~`
    counts against `budget`."""
    from jinja2.compiler import CodeGenerator
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Codegen(CodeGenerator):
        def visit_Concat(self, node: Any, frame: Any) -> None:
            # `a ~ b` goes through environment.concat (below), which checks the size before joining.
            self.write("environment.concat(map(str, (")
            for arg in node.nodes:
                self.visit(arg, frame)
                self.write(", ")
            self.write(")))")

    class Guarded(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset({"*", "**", "+", "%"})
        code_generator_class = Codegen

        @staticmethod
        def concat(parts: Any) -> str:
            # Joins `~`, macro bodies and {% set %} blocks: a loop may repeat one big value many times.
            parts = list(parts)
            budget.size(sum(len(p) for p in parts))
            return budget.made("".join(parts))

        def getattr(self, obj: Any, attribute: str) -> Any:
            budget.tick()
            return super().getattr(obj, attribute)

        def getitem(self, obj: Any, argument: Any) -> Any:
            budget.tick()
            return super().getitem(obj, argument)

        def call(self, context: Any, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
            budget.tick()
            budget.args([*args, *kwargs.values()])
            if getattr(obj, "__name__", "") in ("format", "format_map"):  # the sandbox wraps str.format
                _check_format(getattr(getattr(obj, "__wrapped__", obj), "__self__", None))
            return budget.made(super().call(context, obj, *args, **kwargs))

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            budget.tick()
            _binop_guard(budget, operator, left, right)
            return budget.made(super().call_binop(context, operator, left, right))

    return Guarded


def _guarded_env(budget: _Budget) -> Any:
    """transformers' template environment (same sandbox, options, globals and tags), counted."""
    import json
    from datetime import datetime

    import jinja2
    from jinja2.ext import Extension, loopcontrols

    class Generation(Extension):
        # transformers' {% generation %} marks the assistant's text; here it only renders its body.
        tags = {"generation"}

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller: Any) -> str:
            return caller()

    class Namespace(jinja2.utils.Namespace):
        def __setitem__(self, name: str, value: Any) -> None:
            budget.tick()
            budget.args([value])
            super().__setitem__(name, value)

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    env = _guarded_class(budget)(trim_blocks=True, lstrip_blocks=True, extensions=[Generation, loopcontrols])
    env.filters["tojson"] = lambda x, ensure_ascii=False, indent=None, separators=None, sort_keys=False: json.dumps(
        x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)
    env.filters = {name: _counted(budget, f) for name, f in env.filters.items()}
    env.tests = {name: _counted(budget, f) for name, f in env.tests.items()}
    env.globals.update(range=functools.partial(_CountedRange, budget), raise_exception=raise_exception,
                       strftime_now=lambda fmt: datetime.now().strftime(fmt), dict=lambda *a, **k: dict(*a, **k),
                       namespace=Namespace)
    return env


def _tiny_chats(is_vlm: bool) -> list[tuple[list[dict[str, Any]], bool]]:
    """(messages, add_generation_prompt): a question to answer, and a finished exchange with a system turn."""

    def turn(role: str, text: str, image: bool = False) -> dict[str, Any]:
        if not is_vlm:
            return {"role": role, "content": text}
        return {"role": role, "content": [*([{"type": "image"}] if image else []), {"type": "text", "text": text}]}

    return [([turn("user", "Hi", image=True)], True),
            ([turn("system", "Answer briefly."), turn("user", "What is 2 + 2?", image=True),
              turn("assistant", "4")], False)]


def _render(template: Any, budget: _Budget, context: dict[str, Any]) -> None:
    out = 0
    for chunk in template.generate(**context):
        budget.tick()
        out += len(chunk)
        budget.size(out, "an output")


def _runaway(text: str, is_vlm: bool, tokens: dict[str, str]) -> str | None:
    """Why the template does not finish, or None. Its other errors (a role it refuses, a variable it needs)
    are left to transformers' own render, which reports them."""
    budget = _Budget()
    try:
        template = _guarded_env(budget).from_string(text)
        for messages, prompt in _tiny_chats(is_vlm):
            with contextlib.suppress(Exception):
                try:
                    _render(template, budget, {**tokens, "messages": messages, "add_generation_prompt": prompt})
                except RecursionError:
                    raise _Runaway("it calls itself without end (recursion too deep)") from None
                except MemoryError:
                    raise _Runaway("it ran out of memory") from None
    except _Runaway as exc:
        return str(exc)
    except Exception:
        return None  # it does not compile: transformers says why
    return None


def _templates_of(owner: Any) -> list[tuple[str | None, str]]:
    """(name, text) of each template: one string, or named templates (a dict, or a list of name/template)."""
    found = getattr(owner, "chat_template", None)
    if isinstance(found, str):
        return [(None, found)] if found.strip() else []
    if isinstance(found, dict):
        return [(str(k), v) for k, v in found.items() if isinstance(v, str)]
    if isinstance(found, list):
        return [(str(t.get("name")), t["template"]) for t in found
                if isinstance(t, dict) and isinstance(t.get("template"), str)]
    return []


_PASSED: set[tuple[str, bool]] = set()  # templates already checked in this process (a chat checks each turn)


def check_chat_template(owner: Any, is_vlm: bool = False) -> None:
    """Raise ChatTemplateError when the chat template of `owner` (a tokenizer, or a VLM's processor) does not
    finish on a tiny conversation within a bounded number of steps, seconds and characters."""
    tokenizer = getattr(owner, "tokenizer", owner)
    tokens = {k: v for k, v in (getattr(tokenizer, "special_tokens_map", None) or {}).items() if isinstance(v, str)}
    for name, text in _templates_of(owner):
        if (text, is_vlm) in _PASSED:
            continue
        why = _runaway(text, is_vlm, tokens)
        if why:
            where = getattr(tokenizer, "name_or_path", "") or "the model's folder"
            label = f"chat template {name!r}" if name else "chat template"
            raise ChatTemplateError(f"the model's {label} did not finish: {why}. The template comes with the model "
                                    f"({where}: chat_template.jinja or tokenizer_config.json); fix it there or "
                                    "use a model with a working template")
        _PASSED.add((text, is_vlm))

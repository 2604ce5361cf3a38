"""Message personalisation with Jinja2's sandbox: HTML autoescaped, text not; unknown
variables fail when the template is saved (checked against a sample recipient with
StrictUndefined), and templates never reach Python internals or the database.

Every render also runs under a budget (``Budget``), so that no template can hang a web
thread at save or take a worker down at send:

- time: a deadline (``DELIVERY_TEMPLATE_RENDER_MS``) checked at every loop step, call,
  filter, operator and output;
- loops: ``DELIVERY_TEMPLATE_MAX_ITERATIONS`` iterations in all, across nested loops (and no
  list or ``range`` longer than that);
- size: no string (and no output) longer than ``DELIVERY_TEMPLATE_MAX_CHARS`` characters.
  Operators and methods that build large values (``*``, ``**``, ``+``, ``~``, ``%``,
  ``center``, ``replace``, ``join``, ``format``…) are checked *before* they run, from the
  sizes of their operands.

Compiling is bounded too: the environment does not fold constants at compile time (Jinja's
optimizer would evaluate ``'x' * 10**9`` there, outside any budget), and the source itself
is at most ``DELIVERY_TEMPLATE_MAX_CHARS`` long. A template over budget raises
``TemplateBudgetError``: refused at save with its reason, and at send it fails that one
message (it is one of ``sending.RENDER_ERRORS``).
"""

from __future__ import annotations

import re
import string
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from functools import wraps
from typing import Any

from django.conf import settings
from jinja2 import StrictUndefined, Template, TemplateSyntaxError, UndefinedError, nodes
from jinja2.compiler import CodeGenerator
from jinja2.ext import Extension
from jinja2.lexer import Token, TokenStream
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
from jinja2.utils import pass_context

from campaigns.choices import Channel
from campaigns.targeting.registry import BOOKING_FIELDS, CONTACT_FIELDS

# The content fields each channel renders (True: HTML, autoescaped). A field a channel does
# not use is neither validated, nor rendered, nor shown for it.
CHANNEL_FIELDS: dict[str, dict[str, bool]] = {
    Channel.EMAIL: {"subject": False, "html_body": True, "text_body": False},
    Channel.SMS: {"text_body": False},
    Channel.PUSH: {"push_title": False, "text_body": False},
    Channel.DIRECT_MAIL: {},
}
MAX_INT_BITS = 10_000  # about 3,000 digits: more than any count or amount a message shows


class TemplateBudgetError(SecurityError):
    """A template went over its render budget (time, loop iterations or size)."""


class Budget:
    """What one render may spend: shared by every template rendered while it is active (the
    parts of one message at send; the fields of one delivery at save)."""

    def __init__(self, *, seconds: float, max_iterations: int, max_chars: int) -> None:
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        self.max_iterations = max_iterations
        self.max_chars = max_chars
        self.iterations = 0
        self.output = 0

    @classmethod
    def from_settings(cls) -> Budget:
        return cls(
            seconds=settings.DELIVERY_TEMPLATE_RENDER_MS / 1000,
            max_iterations=settings.DELIVERY_TEMPLATE_MAX_ITERATIONS,
            max_chars=settings.DELIVERY_TEMPLATE_MAX_CHARS,
        )

    def tick(self) -> None:
        if time.monotonic() > self.deadline:
            raise TemplateBudgetError(
                f"rendering takes longer than {self.seconds:g} s (the limit for one message)"
            )

    def step(self) -> None:
        """One loop iteration."""
        self.iterations += 1
        if self.iterations > self.max_iterations:
            raise TemplateBudgetError(
                f"the loops run more than {self.max_iterations:,} times in all"
            )
        self.tick()

    def emit(self, size: int) -> None:
        """``size`` characters of output (literal text or a value)."""
        self.output += size
        if self.output > self.max_chars:
            raise TemplateBudgetError(f"the output is longer than {self.max_chars:,} characters")
        self.tick()

    def chars(self, size: int, what: str) -> None:
        """A string of ``size`` characters is about to be built."""
        if size > self.max_chars:
            raise TemplateBudgetError(
                f"{what} would make {size:,} characters (the limit is {self.max_chars:,})"
            )

    def items(self, size: int, what: str) -> None:
        """A list (or range) of ``size`` items is about to be built."""
        if size > self.max_iterations:
            raise TemplateBudgetError(
                f"{what} would make {size:,} items (the limit is {self.max_iterations:,})"
            )

    def value(self, value: Any, what: str) -> Any:
        """A value just built: strings and containers within the limits."""
        if isinstance(value, str):
            self.chars(len(value), what)
        elif isinstance(value, (list, tuple, dict, set, frozenset)):
            self.items(len(value), what)
        self.tick()
        return value


_ACTIVE: ContextVar[Budget | None] = ContextVar("template_budget", default=None)


@contextmanager
def budget() -> Iterator[Budget]:
    """The active budget, or a new one (from the settings) for the duration of the block."""
    active = _ACTIVE.get()
    if active is not None:
        yield active
        return
    fresh = Budget.from_settings()
    token = _ACTIVE.set(fresh)
    try:
        yield fresh
    finally:
        _ACTIVE.reset(token)


def _current() -> Budget:
    active = _ACTIVE.get()
    if active is None:  # Template.generate()/stream(): not used, and not allowed unbudgeted
        raise TemplateBudgetError("templates are rendered only through render()")
    return active


# Sizes checked before an operation runs ----------------------------------------------------

_PRINTF = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d*)(?:\.(\*|\d*))?[hlL]?[a-zA-Z%]")
_DIGITS = re.compile(r"\d+")


def _check_printf(budget: Budget, fmt: str) -> None:
    """``'%999999999s' % x`` pads to a billion characters: widths are checked first."""
    for width, precision in _PRINTF.findall(fmt):
        for number in (width, precision):
            if number == "*":
                raise TemplateBudgetError("a '*' width in a % format is not allowed")
            if number:
                budget.chars(int(number), "a % format width")


def _check_format(budget: Budget, fmt: str) -> None:
    """``'{:>999999999}'.format(x)`` likewise; a width taken from an argument is refused."""
    try:
        fields = list(string.Formatter().parse(fmt))
    except ValueError:
        return  # the call itself raises the format error
    for _literal, _name, spec, _conversion in fields:
        if spec and "{" in spec:
            raise TemplateBudgetError("a nested field in a format specification is not allowed")
        for number in _DIGITS.findall(spec or ""):
            budget.chars(int(number), "a format width")


def _check_str_method(budget: Budget, text: str, name: str, args: tuple, kwargs: dict) -> tuple:
    """Checks before a string method that may build a large string; returns its arguments
    (a generator given to ``join`` is read once, here)."""
    if name in ("center", "ljust", "rjust", "zfill") and args and isinstance(args[0], int):
        budget.chars(args[0], f"{name}()")
    elif name == "expandtabs":
        size = args[0] if args else kwargs.get("tabsize", 8)
        if isinstance(size, int):
            budget.chars(len(text) + text.count("\t") * max(size, 0), "expandtabs()")
    elif name == "replace" and len(args) >= 2:
        _check_replace(budget, text, *args[:3])
    elif name == "join" and args:
        items = list(args[0])
        budget.items(len(items), "join()")
        size = sum(len(item) for item in items if isinstance(item, str))
        budget.chars(size + len(text) * max(len(items) - 1, 0), "join()")
        args = (items, *args[1:])
    elif name in ("format", "format_map"):
        _check_format(budget, text)
    return args


def _check_replace(budget: Budget, text: Any, old: Any, new: Any, count: Any = -1) -> None:
    if not (isinstance(text, str) and isinstance(old, str) and isinstance(new, str)):
        return
    found = text.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        found = min(found, count)
    budget.chars(len(text) + found * (len(new) - len(old)), "replace()")


def _check_binop(budget: Budget, operator: str, left: Any, right: Any) -> None:
    sequences = (str, list, tuple)
    if operator == "*":
        for seq, times in ((left, right), (right, left)):
            if isinstance(seq, sequences) and isinstance(times, int):
                size = len(seq) * max(times, 0)
                if isinstance(seq, str):
                    budget.chars(size, "a string repetition")
                else:
                    budget.items(size, "a list repetition")
                return
        both = isinstance(left, int) and isinstance(right, int)
        if both and left.bit_length() + right.bit_length() > MAX_INT_BITS:
            raise TemplateBudgetError("a multiplication of numbers that large is not allowed")
    elif operator == "**":
        both = isinstance(left, int) and isinstance(right, int)
        if both and right > 0 and abs(left) > 1 and left.bit_length() * right > MAX_INT_BITS:
            raise TemplateBudgetError(
                f"{left} ** {right} is too large a number (the limit is about "
                f"{MAX_INT_BITS:,} bits)"
            )
    elif operator == "+":
        if isinstance(left, str) and isinstance(right, str):
            budget.chars(len(left) + len(right), "a string addition")
        elif isinstance(left, sequences) and isinstance(right, sequences):
            budget.items(len(left) + len(right), "a list addition")
    elif operator == "%" and isinstance(left, str):
        _check_printf(budget, left)


def _filter_checks(name: str) -> Any:
    """What to check before the filter ``name`` runs, from its value and arguments (most
    filters: nothing); it may return the value to give the filter (a generator read once)."""
    sized = name in ("center", "indent", "wordwrap", "batch", "slice")

    def check(budget: Budget, value: Any, args: tuple, kwargs: dict) -> Any:
        if sized:
            for number in (*args, *kwargs.values()):
                if isinstance(number, int) and not isinstance(number, bool):
                    budget.chars(number, f"the {name} filter")
        if name == "indent" and isinstance(value, str):
            width = args[0] if args else kwargs.get("width", 4)
            pad = len(width) if isinstance(width, str) else width
            if isinstance(pad, int):
                budget.chars(len(value) + (value.count("\n") + 1) * pad, "the indent filter")
        elif name == "wordwrap" and isinstance(value, str):
            wrap = kwargs.get("wrapstring", args[2] if len(args) > 2 else "\n") or "\n"
            budget.chars(len(value) * (1 + len(str(wrap))), "the wordwrap filter")
        elif name == "urlize" and isinstance(value, str):  # slow, and each link grows
            budget.chars(len(value) * 5, "the urlize filter")
        elif name == "replace":
            _check_replace(budget, value, *args[:3])
        elif name == "format" and isinstance(value, str):
            _check_printf(budget, value)
        elif name == "join" and not isinstance(value, str):
            value = list(value)
            budget.items(len(value), "the join filter")
            sep = args[0] if args else kwargs.get("d", "")
            size = sum(len(item) for item in value if isinstance(item, str))
            budget.chars(size + len(str(sep)) * max(len(value) - 1, 0), "the join filter")
        return value

    checked = ("center", "indent", "wordwrap", "batch", "slice", "urlize", "replace", "format",
               "join")  # fmt: skip
    return check if name in checked else None


def _budgeted_filter(name: str, func: Any) -> Any:
    """A filter checked like an operator: its size arguments before, its result after."""
    pass_arg = getattr(getattr(func, "jinja_pass_arg", None), "name", None)
    check = _filter_checks(name)
    what = f"the {name} filter"

    @pass_context
    @wraps(func)
    def call(context: Any, value: Any, *args: Any, **kwargs: Any) -> Any:
        budget = _current()
        if check is not None:
            value = check(budget, value, args, kwargs)
        if pass_arg == "context":
            result = func(context, value, *args, **kwargs)
        elif pass_arg == "eval_context":
            result = func(context.eval_ctx, value, *args, **kwargs)
        elif pass_arg == "environment":
            result = func(context.environment, value, *args, **kwargs)
        else:
            result = func(value, *args, **kwargs)
        return budget.value(result, what)

    return call


class _Counted:
    """A loop's iterable: each item is one step of the budget."""

    __slots__ = ("iterable",)

    def __init__(self, iterable: Any) -> None:
        self.iterable = iterable

    def __len__(self) -> int:
        return len(self.iterable)  # TypeError when unsized: the loop then reads it whole

    def __iter__(self) -> Iterator[Any]:
        budget = _current()
        for item in self.iterable:
            budget.step()
            yield item


class _DeadlineWhileParsing(Extension):
    """Lexing and parsing read the tokens through this filter: the deadline is checked at
    each one (a source of tens of thousands of tags takes seconds to compile)."""

    def filter_stream(self, stream: TokenStream) -> Iterator[Token]:
        active = _current()
        for token in stream:
            active.tick()
            yield token


class _BudgetedCodeGenerator(CodeGenerator):
    """Compiled code that reports to the budget: literal text that may repeat (inside a
    loop, a macro, a ``{% set %}`` or ``{% filter %}`` block) goes through ``finalize`` like
    any value, so all output is counted; literal text that is output once stays a compiled
    constant, as Jinja makes it. ``~`` checks the size of its parts before joining.
    Generating checks the deadline at each node."""

    loops = 0

    def visit(self, node: nodes.Node, *args: Any, **kwargs: Any) -> Any:
        _current().tick()
        return super().visit(node, *args, **kwargs)

    def visit_For(self, node: nodes.For, frame: Any) -> None:
        self.loops += 1
        try:
            super().visit_For(node, frame)
        finally:
            self.loops -= 1

    def _output_child_to_const(self, node: nodes.Expr, frame: Any, finalize: Any) -> str:
        if self.loops or frame.buffer is not None:
            raise nodes.Impossible()
        return super()._output_child_to_const(node, frame, finalize)

    def visit_Concat(self, node: nodes.Concat, frame: Any) -> None:
        if frame.eval_ctx.volatile:
            join = "(markup_join if context.eval_ctx.autoescape else str_join)"
        else:
            join = "markup_join" if frame.eval_ctx.autoescape else "str_join"
        self.write(f"environment.budget_concat({join}, (")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class BudgetedTemplate(Template):
    """``render`` runs under the active budget (or a new one): Python's own limits met on the
    way (recursion, memory) are budget errors too, never a crashed worker."""

    def render(self, *args: Any, **kwargs: Any) -> str:
        active = _ACTIVE.get()
        token = None if active else _ACTIVE.set(active := Budget.from_settings())
        try:
            result = super().render(*args, **kwargs)
        except RecursionError:
            raise TemplateBudgetError("the template calls itself too deeply") from None
        except MemoryError:
            raise TemplateBudgetError("the template needs too much memory") from None
        finally:
            if token is not None:
                _ACTIVE.reset(token)
        active.chars(len(result), "the output")
        return result


class BudgetedEnvironment(ImmutableSandboxedEnvironment):
    """Jinja's sandbox (lists and dicts cannot be changed in place) with a render budget."""

    code_generator_class = _BudgetedCodeGenerator
    template_class = BudgetedTemplate
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, **options: Any) -> None:
        # No constant folding: the optimizer would run ``'x' * 10**9`` while compiling.
        super().__init__(undefined=StrictUndefined, optimized=False, finalize=self._finalize,
                         extensions=[_DeadlineWhileParsing], **options)  # fmt: skip
        self.globals["range"] = self._range
        self.globals.pop("lipsum", None)  # lorem ipsum of any length: not for messages
        self.filters = {name: _budgeted_filter(name, f) for name, f in self.filters.items()}

    @staticmethod
    @pass_context
    def _finalize(context: Any, value: Any) -> Any:
        """Every value output (and literal text that may repeat): counted. It runs tens of
        times per message, so it is kept short; the deadline is checked elsewhere."""
        active = _ACTIVE.get() or _current()
        active.output += len(value) if isinstance(value, str) else len(str(value))
        if active.output > active.max_chars:
            active.emit(0)  # raises, with the message
        return value

    @staticmethod
    def _range(*args: int) -> range:
        numbers = range(*args)
        _current().items(len(numbers), "range()")
        return numbers

    def budget_iterate(self, iterable: Any) -> _Counted:
        return _Counted(iterable)

    def budget_concat(self, joined: Any, parts: tuple) -> Any:
        """``a ~ b``: the parts were evaluated; their sizes are checked before the join."""
        budget = _current()
        budget.chars(sum(len(p) if isinstance(p, str) else len(str(p)) for p in parts), "~")
        return joined(parts)

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        """Parsed, with every loop counted; too long a source is refused before parsing."""
        limit = settings.DELIVERY_TEMPLATE_MAX_CHARS
        if len(source) > limit:
            raise TemplateBudgetError(
                f"the template is {len(source):,} characters long (the limit is {limit:,})"
            )
        try:
            with budget():
                tree = super()._parse(source, name, filename)
        except RecursionError:
            raise TemplateBudgetError("the template is nested too deeply") from None
        for node in tree.find_all((nodes.Block, nodes.Extends, nodes.Include, nodes.Import,
                                   nodes.FromImport)):  # fmt: skip
            # A message template stands alone (no loader), and a block inside a loop would
            # repeat its text unseen by the budget.
            tag = type(node).__name__.lower().replace("fromimport", "from")
            raise TemplateSyntaxError(f"{{% {tag} %}} is not allowed in a message", node.lineno)
        for loop in tree.find_all(nodes.For):
            if loop.recursive:
                raise TemplateSyntaxError("recursive loops are not allowed", loop.lineno)
            loop.iter = nodes.Call(
                nodes.EnvironmentAttribute("budget_iterate"), [loop.iter], [], None, None,
                lineno=loop.lineno,
            )  # fmt: skip
        return tree

    def compile(self, source: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            with budget():  # the active one at save; its own when a worker compiles
                return super().compile(source, *args, **kwargs)
        except (RecursionError, MemoryError, SyntaxError) as exc:  # Python's compiler limits
            raise TemplateBudgetError(f"the template is too complex to compile ({exc})") from None

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        budget = _current()
        budget.tick()
        _check_binop(budget, operator, left, right)
        return budget.value(self.binop_table[operator](left, right), f"{operator!r}")

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        budget = _current()
        budget.tick()
        target = getattr(__obj, "__wrapped__", __obj)  # str.format, as the sandbox wraps it
        owner = getattr(target, "__self__", None)
        if isinstance(owner, str):
            args = _check_str_method(budget, owner, target.__name__, args, kwargs)
        result = super().call(__context, __obj, *args, **kwargs)
        return budget.value(result, f"{getattr(target, '__name__', 'the call')}()")


HTML = BudgetedEnvironment(autoescape=True)
TEXT = BudgetedEnvironment(autoescape=False)
CONTACT_KEYS = [key for key in CONTACT_FIELDS if "." not in key]
RECORD_KEYS = [key for key in BOOKING_FIELDS if "." not in key]
ENTITY_KEYS = ("code", "name", "contact_email", "sender_name", "sender_address", "reply_to",
               "postal_address")  # fmt: skip
# Per message, beside contact, entity, record, perso, data and campaign (campaigns.engagement).
LINK_VARIABLES = ("unsubscribe_url", "preferences_url", "mirror_url", "postal_address")


class Data(dict):
    """Enrichment values: a name the run did not attach renders empty, not an error."""

    def __missing__(self, key: str) -> str:
        return ""


def sample_context(*, multi_level: bool, perso: Mapping[str, Any]) -> dict[str, Any]:
    """A recipient with every field the templates may use (validation and blank preview)."""
    context: dict[str, Any] = {
        "contact": {key: f"<{key}>" for key in CONTACT_KEYS},
        "entity": {key: f"<{key}>" for key in ENTITY_KEYS},
        "perso": perso if isinstance(perso, Data) else dict(perso),
        "data": Data(),
        "campaign": {"name": "<campaign>"},
        **{name: f"<{name}>" for name in LINK_VARIABLES},
    }
    if multi_level:
        context["record"] = {key: f"<{key}>" for key in RECORD_KEYS}
    return context


def validate_template(source: str, *, html: bool, context: Mapping[str, Any]) -> list[str]:
    """Problems of a template: syntax (with its line), unknown variables, sandbox refusals,
    and its budget (under the active budget: a delivery's fields share one at save)."""
    env = HTML if html else TEXT
    with budget():
        try:
            template = env.from_string(source)
        except TemplateSyntaxError as exc:
            return [f"line {exc.lineno}: {exc.message}"]
        except TemplateBudgetError as exc:
            return [f"over budget: {exc}"]
        try:
            template.render(**context)
        except UndefinedError as exc:
            return [f"unknown variable: {exc.message}"]
        except TemplateBudgetError as exc:
            return [f"over budget: {exc}"]
        except SecurityError as exc:
            return [f"not allowed: {exc}"]
        except Exception as exc:  # a filter given bad input, a division by zero…
            return [f"cannot render: {type(exc).__name__}: {exc}"]
    return []


def render(source: str, *, html: bool, context: Mapping[str, Any]) -> str:
    return (HTML if html else TEXT).from_string(source).render(**context)

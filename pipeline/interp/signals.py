"""Nonlinearities written as arithmetic: products of two signals, and masks of the image.

The deconvnet has rules for rectifiers only (see `pipeline.interp.rules`). Arithmetic hides two
more kinds of nonlinearity that a walk over the autograd graph's operation names cannot tell
from linear layers:

- A product or quotient of two tensors that both depend on the image (``x * x``, a hand-written
  h-swish ``x * F.relu6(x + 3) / 6``, a gate ``x * (F.relu6(s + 3) / 6)``, ``x / x.norm(...)``,
  ``x @ y``, a convolution whose weights are computed from the image). Its backward multiplies
  the incoming signal by the other operand's forward value: a gate, for which the deconvnet has
  no rule. A product with a constant, a parameter or a buffer (``x * 0.5``, ``x * self.scale``,
  ``x / 6``) is linear in the image and stays. Parameters may require grad during the analysis,
  so whether an operand depends on the image is read off the graph after the pass
  (`ImagePaths`): the image is the one leaf that is not a parameter.
- A *mask*: a tensor computed from the image without a gradient (a comparison ``x > 0``,
  ``argmax`` indices, ``x.detach()``, anything computed under ``no_grad``). It carries no path
  on the autograd graph, so there ``x * (x > 0)`` looks like a product with a constant. `Signals`
  follows masks through the forward pass. A signal compared with zero and applied to that same
  signal is a rectifier written by hand (``x * (x > 0)``, ``x * (x >= 0).float()``,
  ``torch.where(x > 0, x, 0)``, ``x.masked_fill(x < 0, 0)``, ``x[x < 0] = 0``,
  ``torch.maximum(x, torch.zeros_like(x))``): `Signals.rectifier` recognises it and the rules
  apply there exactly as at ``F.relu``. Any other use of a mask in an operation whose result
  has a gradient is a nonlinearity without a rule.

Masks are recognised by identity: the comparison's own result (or its conversion to another
dtype, or its negation) applied to the very tensor compared, unchanged since (its version
counter). A mask copied through other operations, or one derived from the image as a Python
number (``x.max().item()``), is not followed.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _existing(*functions: object) -> tuple:
    return tuple(f for f in functions if f is not None)


def _functions(module: object, names: str) -> tuple:
    return _existing(*(getattr(module, name, None) for name in names.split()))


_MUL = _functions(torch, "mul multiply") + _functions(Tensor, "mul multiply __mul__ __rmul__")
_MUL_INPLACE = _functions(Tensor, "mul_ multiply_ __imul__")
_DIV = _functions(torch, "div divide true_divide") + _functions(
    Tensor, "div divide true_divide __truediv__ __rtruediv__ __div__ __rdiv__ div_ divide_ "
            "true_divide_ __itruediv__ __idiv__")
_MATMUL = _functions(torch, "matmul mm bmm mv dot inner outer ger kron tensordot") + \
    _functions(Tensor, "matmul mm bmm mv dot inner outer ger kron __matmul__ __rmatmul__")
# function -> (name, the operands whose product it is: args[first:last])
_PRODUCTS: dict[object, tuple[str, int, int | None]] = {
    **{f: ("mul", 0, 2) for f in _MUL + _MUL_INPLACE},
    **{f: ("div", 0, 2) for f in _DIV},
    **{f: ("matmul", 0, 2) for f in _MATMUL},
    torch.einsum: ("einsum", 1, None),  # einsum(equation, *operands) or (equation, [operands])
    **{f: ("addcmul", 1, 3) for f in _functions(torch, "addcmul")
       + _functions(Tensor, "addcmul addcmul_")},
    **{f: ("addcdiv", 1, 3) for f in _functions(torch, "addcdiv")
       + _functions(Tensor, "addcdiv addcdiv_")},
    **{f: ("matmul", 1, 3) for f in _functions(torch, "addmm baddbmm addbmm addmv addr")
       + _functions(Tensor, "addmm baddbmm addbmm addmv addr addmm_ baddbmm_")},
    **{f: (f.__name__, 0, 2) for f in _functions(  # a weight computed from the image
        F, "linear bilinear conv1d conv2d conv3d conv_transpose1d conv_transpose2d "
           "conv_transpose3d")},
}
_QUOTIENTS = {"div", "addcdiv"}
# Autograd nodes of products, for those the mode did not see: name -> (kind, operand slots)
_PRODUCT_NODES = {
    "Mul": ("mul", (0, 1)), "Div": ("div", (0, 1)), "Mm": ("matmul", (0, 1)),
    "Bmm": ("matmul", (0, 1)), "Mv": ("matmul", (0, 1)), "Dot": ("matmul", (0, 1)),
    "Addmm": ("matmul", (1, 2)), "Baddbmm": ("matmul", (1, 2)), "Addbmm": ("matmul", (1, 2)),
    "Addmv": ("matmul", (1, 2)), "Addcmul": ("addcmul", (1, 2)), "Addcdiv": ("addcdiv", (1, 2)),
    "Convolution": ("convolution", (0, 1)),
}
PRODUCT = "a product of two signals that both depend on the image"
QUOTIENT = "a quotient of two signals that both depend on the image"
MASKED = ("with a mask computed from the image without a gradient (a comparison, indices, a "
          "detached copy) other than a ReLU's own x > 0")

_ABOVE = _functions(torch, "gt ge greater greater_equal") + _functions(
    Tensor, "gt ge greater greater_equal __gt__ __ge__")  # x > 0: the units a ReLU keeps
_BELOW = _functions(torch, "lt le less less_equal") + _functions(
    Tensor, "lt le less less_equal __lt__ __le__")  # x < 0: the units a ReLU zeroes
_KEEPS_MASK = _functions(Tensor, "float double half bfloat16 to type type_as bool int long byte "
                                 "short contiguous clone")
_NEGATIONS = _functions(torch, "logical_not bitwise_not") + _functions(
    Tensor, "logical_not bitwise_not __invert__")
_ONE_MINUS = _functions(Tensor, "__rsub__ rsub") + _functions(torch, "rsub")
_WHERE = _functions(torch, "where") + _functions(Tensor, "where")
_MASKED_FILL = {**{f: False for f in _functions(torch, "masked_fill")
                   + _functions(Tensor, "masked_fill")},
                **{f: True for f in _functions(Tensor, "masked_fill_")}}
_SETITEM = _functions(Tensor, "__setitem__")
_MAXIMUM = _functions(torch, "maximum max fmax") + _functions(Tensor, "maximum max fmax")
_WRITTEN_RELU = frozenset(_MUL + _MUL_INPLACE + _WHERE + tuple(_MASKED_FILL) + _SETITEM + _MAXIMUM)
# results that do not depend on the values of their tensor arguments (only on shape, dtype)
_VALUE_FREE = frozenset(
    _functions(torch, "zeros_like ones_like empty_like full_like rand_like randn_like "
                      "randint_like")
    + _functions(Tensor, "new_zeros new_ones new_empty new_full new_tensor new"))
_ZEROS = frozenset(_functions(torch, "zeros zeros_like") + _functions(Tensor, "new_zeros"))
_FULL = {**{f: 1 for f in _functions(torch, "full full_like")},  # where the fill value is
         **{f: 2 for f in _functions(Tensor, "new_full")}}  # (self, size, fill_value)


def _tensors(args: tuple, kwargs: dict) -> list[Tensor]:
    """The tensor arguments, including those inside a list or tuple (cat, einsum)."""
    found = []
    for value in (*args, *kwargs.values()):
        if isinstance(value, Tensor):
            found.append(value)
        elif isinstance(value, list | tuple):
            found.extend(v for v in value if isinstance(v, Tensor))
    return found


def _signals(tensors: list[Tensor]) -> tuple:
    """Where the gradients of those tensors that may carry the image's go; parameters do not
    (nor anything without a gradient)."""
    return tuple(source(t) for t in tensors if t.requires_grad and not isinstance(t, nn.Parameter))


def source(tensor: Tensor) -> object:
    """Where a tensor's gradient goes: its autograd node, or the tensor itself for a leaf."""
    return tensor.grad_fn if tensor.grad_fn is not None else tensor


def op_name(func: object) -> str:
    """The short name of a torch function: "mul" for ``Tensor.__imul__``, "setitem", ..."""
    name = getattr(func, "__name__", str(func)).strip("_")
    for short, functions in (("mul", _MUL + _MUL_INPLACE), ("div", _DIV)):
        if func in functions:
            return short
    return name


@dataclass
class _Mask:
    """A tensor computed from signals without a gradient: where its value came from, and, for a
    signal compared with zero, that signal, its version then and which side is True."""

    ref: weakref.ref
    sources: tuple  # autograd nodes / leaves of the signals it was computed from
    of: weakref.ref | None = None
    version: int = 0
    keeps: bool = True  # True: the units a ReLU keeps (x > 0); False: those it zeroes


@dataclass(frozen=True)
class Use:
    """An operation that is a nonlinearity without a rule if ``needed`` of its ``operands``
    (autograd nodes or leaves) depend on the image."""

    kind: str
    output: Tensor
    node: object
    operands: tuple
    needed: int
    reason: str


class Signals:
    """Follows masks and zero tensors through one forward pass (see the module docstring).

    Entries are kept by ``id`` with a weak reference to check identity, so nothing here keeps a
    tensor alive; dead entries are dropped as the tables grow."""

    def __init__(self) -> None:
        self._masks: dict[int, _Mask] = {}
        self._zeros: dict[int, tuple[weakref.ref[Tensor], int]] = {}
        self._limit = 64

    def clear(self) -> None:
        self._masks.clear()
        self._zeros.clear()

    def mask(self, tensor: object) -> _Mask | None:
        if not isinstance(tensor, Tensor) or tensor.requires_grad:
            return None  # a tensor with a gradient is a signal, whatever it was made of
        entry = self._masks.get(id(tensor))
        return entry if entry is not None and entry.ref() is tensor else None

    def _zero(self, value: object) -> bool:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return value == 0
        if not isinstance(value, Tensor):
            return False
        entry = self._zeros.get(id(value))
        return entry is not None and entry[0]() is value and value._version == entry[1]

    def _keeps(self, mask: object, signal: object, keeps: bool) -> bool:
        """Whether ``mask`` is ``signal`` compared with zero, True where a ReLU keeps
        (``keeps``) or zeroes it, and ``signal`` is unchanged since."""
        entry = self.mask(mask)
        return entry is not None and entry.of is not None and entry.of() is signal and \
            entry.keeps == keeps and isinstance(signal, Tensor) and \
            signal._version == entry.version

    def rectifier(self, func: object, args: tuple, kwargs: dict) -> tuple[Tensor, bool] | None:
        """(x, in place) when the call is a ReLU of x written with a mask of x, else None."""
        if func not in _WRITTEN_RELU or not self._masks and not self._zeros:
            return None
        if func in _MUL or func in _MUL_INPLACE:
            a = args[0]
            b: Any = args[1] if len(args) > 1 else kwargs.get("other")  # a tensor if found
            if self._keeps(b, a, True):
                found = (a, func in _MUL_INPLACE)
            elif self._keeps(a, b, True) and func in _MUL:
                found = (b, False)
            else:
                return None
            same_dtype = torch.result_type(a, b) == found[0].dtype
            return found if same_dtype else None
        if func in _WHERE:
            if func is Tensor.where:  # x.where(condition, y) is torch.where(condition, x, y)
                args = (args[1], args[0], *args[2:])
            if len(args) + len(kwargs) < 3:
                return None
            condition, a, b = (*args, *kwargs.values())[:3]
            if self._keeps(condition, a, True) and self._zero(b):
                return (a, False) if self._same(a, b) else None
            if self._keeps(condition, b, False) and self._zero(a):
                return (b, False) if self._same(b, a) else None
            return None
        if func in _MASKED_FILL and len(args) + len(kwargs) >= 3:
            x, mask, value = (*args, *kwargs.values())[:3]
            return (x, _MASKED_FILL[func]) if self._keeps(mask, x, False) and \
                self._zero(value) else None
        if func in _SETITEM and len(args) == 3:
            return (args[0], True) if self._keeps(args[1], args[0], False) and \
                self._zero(args[2]) else None
        if func in _MAXIMUM and len(args) == 2 and not kwargs:
            for x, zero in (args, args[::-1]):  # a tensor of zeros (x.max(0) is a reduction)
                if isinstance(x, Tensor) and isinstance(zero, Tensor) and self._zero(zero) \
                        and self._same(x, zero):
                    return x, False
        return None

    @staticmethod
    def _same(x: Tensor, zero: object) -> bool:
        """Whether ``zero`` (a number or a zero tensor) leaves x's shape and dtype as they are."""
        if not isinstance(zero, Tensor):
            return True
        return zero.dtype == x.dtype and torch.broadcast_shapes(x.shape, zero.shape) == x.shape

    def run(self, func, args: tuple, kwargs: dict) -> tuple[object, Use | None]:
        """Call ``func``; note the masks and zeros it makes; the `Use` it is if it multiplies
        two signals or applies a mask to one."""
        tensors = _tensors(args, kwargs)
        if not tensors:
            output = func(*args, **kwargs)
            self._note_zero(func, args, kwargs, output)
            return output, None
        product = _PRODUCTS.get(func)
        operands = ()
        if product is not None:  # their nodes before the call: an in-place one replaces them
            _, first, last = product
            operands = _signals(_tensors(args[first:last], {}))
        signals = _signals(tensors)
        masks = [entry for entry in map(self.mask, tensors) if entry is not None]
        output = func(*args, **kwargs)
        if func in _VALUE_FREE:
            self._note_zero(func, args, kwargs, output)
            return output, None
        outputs = [output] if isinstance(output, Tensor) else \
            [o for o in output if isinstance(o, Tensor)] if isinstance(output, tuple) else []
        if func in _SETITEM and isinstance(args[0], Tensor):
            outputs = [args[0]]
        plain = [o for o in outputs if not o.requires_grad]
        if plain and (signals or masks or func in _ABOVE or func in _BELOW):
            sources = signals + tuple(s for entry in masks for s in entry.sources)
            for tensor in plain:
                self._note_mask(func, args, tensor, sources, masks)
        graded = next((o for o in outputs if o.requires_grad), None)
        if graded is None or graded.grad_fn is None:
            return output, None
        sources = tuple(s for entry in masks for s in entry.sources)
        if sources:  # (a mask of buffers alone has none: a constant)
            return output, Use(op_name(func), graded, graded.grad_fn, sources, 1, MASKED)
        if len(operands) >= 2:
            kind = product[0]
            return output, Use(kind, graded, graded.grad_fn, operands, 2,
                               QUOTIENT if kind in _QUOTIENTS else PRODUCT)
        return output, None

    def _note_mask(self, func, args: tuple, tensor: Tensor, sources: tuple,
                   masks: list[_Mask]) -> None:
        entry = _Mask(weakref.ref(tensor), sources)
        first = args[0] if args else None
        if (func in _ABOVE or func in _BELOW) and isinstance(first, Tensor) and \
                len(args) > 1 and self._zero(args[1]):
            entry.of, entry.version = weakref.ref(first), first._version
            entry.keeps = func in _ABOVE
        elif masks and masks[0] is self.mask(first) and masks[0].of is not None and (
                func in _KEEPS_MASK
                or (func in _NEGATIONS and isinstance(first, Tensor) and first.dtype == torch.bool)
                or (func in _ONE_MINUS and len(args) > 1 and _is_one(args[1]))):
            entry.of, entry.version = masks[0].of, masks[0].version
            entry.keeps = masks[0].keeps == (func in _KEEPS_MASK)
        self._keep(self._masks, id(tensor), entry)

    def _note_zero(self, func, args: tuple, kwargs: dict, output: object) -> None:
        if not isinstance(output, Tensor) or output.requires_grad:
            return
        fill = _FULL.get(func)
        value = _argument(args, kwargs, fill, "fill_value") if fill is not None else None
        data = args[0] if func is torch.tensor and args else None
        if func in _ZEROS or (fill is not None and self._zero(value)) or \
                (data is not None and not isinstance(data, Tensor) and self._zero(data)):
            self._keep(self._zeros, id(output), (weakref.ref(output), output._version))

    def _keep(self, table: dict, key: int, entry: object) -> None:
        table[key] = entry
        if len(table) > self._limit:  # drop the entries of tensors that are gone
            for dead in [k for k, v in table.items()
                         if (v.ref if isinstance(v, _Mask) else v[0])() is None]:
                del table[dead]
            self._limit = max(64, 2 * len(table))


def _is_one(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == 1


def _argument(args: tuple, kwargs: dict, position: int, name: str) -> object:
    return kwargs.get(name, args[position] if len(args) > position else None)


class ImagePaths:
    """Which autograd nodes (and leaves) lead back to the image, memoised over one graph: the
    image is a leaf that requires grad and is not a parameter."""

    def __init__(self) -> None:
        self._memo: dict[object, bool] = {}

    def reaches(self, start: object) -> bool:
        if start is None:
            return False
        if isinstance(start, Tensor):  # a leaf
            return start.requires_grad and not isinstance(start, nn.Parameter)
        memo = self._memo
        stack: list[Any] = [start]  # autograd nodes (each has next_functions)
        while stack:
            node = stack[-1]
            if node in memo:
                stack.pop()
                continue
            parents = [parent for parent, _ in node.next_functions if parent is not None]
            pending = [parent for parent in parents if parent not in memo]
            if pending:
                stack.extend(pending)
                continue
            stack.pop()
            variable = getattr(node, "variable", None)  # AccumulateGrad: a leaf
            memo[node] = self.reaches(variable) if isinstance(variable, Tensor) else \
                any(memo[parent] for parent in parents)
        return memo[start]

    def count(self, operands: tuple) -> int:
        """How many of ``operands`` lead back to the image."""
        return sum(1 for operand in operands if self.reaches(operand))

    def product(self, node: Any) -> str | None:
        """The kind of product an autograd node computes when the rules did not see it made
        ("mul", "matmul", ...) if two of its operands lead back to the image, else None."""
        name = type(node).__name__
        found = _PRODUCT_NODES.get(name[:name.rfind("Backward")]) if "Backward" in name else None
        if found is None:
            return None
        inputs = node.next_functions
        operands = tuple(inputs[i][0] for i in found[1] if i < len(inputs))
        return found[0] if self.count(operands) >= 2 else None

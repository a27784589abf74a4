"""The source document's layer table, generated from the model itself (`alexnet summary`).

The table is traced, not typed: forward hooks record every layer's input and output shape during one
forward pass on the meta device (shapes only, no memory, no arithmetic), and parameters come from the
modules. Columns are the source's (layer, kernel, depth, stride, padding, input, output, parameters)
plus connections and multiply-accumulates:

- padding: VALID (no padding) or SAME (stride 1, output size = input size), as the source names
  them; any other padding is printed as its number (torchvision's conv1 pads 2, which is neither).
- connections: the source's formula F_out² × (K² × K_C + 1) × F_outC. Its text reads "output map size
  × (kernel size × kernel channels + 1) × output channels" (the formula line in the source has a typo,
  "F_0² = ..." for "F_0² × ..."): every output unit counts one connection per weight it reads plus
  one for its bias, as in LeCun et al. 1998. K_C is the channels a kernel sees, i.e. those of its own
  tower. So connections = MACs + output units. A pooling unit reads K² inputs of its own channel and
  has no bias: F_out² × K² × C. Fully connected layers are VALID convolutions whose kernel covers
  the whole input (F_out = 1), so the same formula gives (inputs + 1) × outputs = their parameters.
- MACs (multiply-accumulates, one weight times one input): counted for conv and fc layers; max
  pooling only compares. ReLU, LRN, dropout and flatten rows are left out, as in the source: they
  keep the shape and have no parameters.

Towers: the source writes conv2 per tower (conv2_1, conv2_2, then concat). It splits a layer exactly
where each tower sees only its own half of the input, i.e. where the paper's GPUs did not talk. That
is every grouped convolution: conv2, conv4 and conv5 of the paper net. conv1 (both halves read the
whole image) and conv3 (reads both towers) are single rows, as the source writes conv1: splitting
them by GPU would be placement, not a different computation. A concat row after a grouped conv shows
its one output tensor, the towers' outputs side by side (in the paper, conv4 and conv5 stay on their
GPU; the next row's per-tower input shows that split again). The rows follow the model: towers=1
gives single rows.

Neurons: the output units of the conv and fc layers (fc8 included). The paper net at 227 has
290,400 + 186,624 + 64,896 + 64,896 + 43,264 + 4,096 + 4,096 + 1,000 = 659,272. The paper says
"650,000 neurons"; its own per-layer list (§3.5: 253,440–186,624–64,896–64,896–43,264–4096–4096–1000,
sum 622,312) differs from ours only in conv1, where 253,440 is not 55×55×96 = 290,400 (a known
inconsistency of the paper). Both round to "about 650,000"; we report what the model has.
"""
from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict, dataclass
from typing import Sequence

import torch
from torch import nn
from torch.nn.modules.utils import _pair

from .errors import AlexNetError
from .model import MAX_SIZE, VARIANTS, alexnet

FORMATS = ("table", "markdown", "csv", "json")


# --------------------------------------------------------------------------------------------------
# The source's formulas, as pure functions

def conv_output_size(f_in: int, k: int, s: int = 1, p: int = 0) -> int:
    """General output size: F_out = ⌊(F_in + 2p − k) / s⌋ + 1 (what torch computes).

    >>> conv_output_size(227, 11, 4)      # conv1
    55
    >>> conv_output_size(224, 11, 4, 2)   # torchvision's conv1
    55
    """
    return (f_in + 2 * p - k) // s + 1


def valid_output_size(f_in: int, k: int, s: int = 1) -> int:
    """VALID (no padding): F_out = ⌈(F_in − k + 1) / s⌉, equal to the general formula with p = 0.

    >>> valid_output_size(55, 3, 2)       # pool1
    27
    """
    return -(-(f_in - k + 1) // s)  # ceiling division in integers, exact for any size


def same_output_size(f_in: int, s: int = 1) -> int:
    """SAME (padded so that stride 1 keeps the size): F_out = ⌈F_in / s⌉.

    >>> same_output_size(27)              # conv2
    27
    """
    return -(-f_in // s)


def connections(f_out: int, k: int, k_c: int, f_out_c: int) -> int:
    """The source's connection count of a conv layer: F_out² × (K² × K_C + 1) × F_outC.

    >>> connections(55, 11, 3, 96)        # conv1: 3,025 units × 96 maps × (363 weights + 1 bias)
    105705600
    """
    return f_out * f_out * (k * k * k_c + 1) * f_out_c


def softmax(logits: Sequence[float]) -> list[float]:
    """Logits -> a probability distribution (all positive, sum 1).

    >>> [round(p, 2) for p in softmax([2, 0.5, -3])]     # the source's example
    [0.81, 0.18, 0.01]
    """
    top = max(logits)  # shifting by the max avoids overflow in exp and leaves the result unchanged
    e = [math.exp(z - top) for z in logits]
    total = sum(e)
    return [v / total for v in e]


def cross_entropy(logits: Sequence[float], label: int) -> float:
    """−Σ y_i log p_i with a one-hot label y: −log softmax(logits)[label] (natural log).

    The source computes −log 0.81 = 0.2107 from the rounded probability; unrounded it is 0.2069.
    Both are its "0.21".

    >>> round(cross_entropy([2, 0.5, -3], 0), 2)
    0.21
    """
    top = max(logits)  # log-sum-exp: −log p would be log(0) when p underflows ([1000, 0], 1)
    return top + math.log(sum(math.exp(z - top) for z in logits)) - logits[label]


# --------------------------------------------------------------------------------------------------
# The table, traced from a model

@dataclass
class Row:
    """One row. Shapes are [H, W, C]; None where the source writes "—"."""

    name: str
    kernel: list[int] | None
    depth: int | None
    stride: int | list[int] | None
    padding: str | None
    input: list[int] | None
    output: list[int]
    parameters: int
    connections: int
    macs: int


def _hwc(shape) -> list[int]:
    """(N, C, H, W) -> [H, W, C], the source's order."""
    return [shape[2], shape[3], shape[1]]


def _stride(s) -> int | list[int]:
    s = _pair(s)
    return s[0] if s[0] == s[1] else list(s)


def _padding(padding, k, s) -> str:
    """VALID / SAME as the source names them, otherwise the padding itself."""
    if isinstance(padding, str):  # torch also accepts padding="same" / "valid"
        return padding.upper()
    p, k, s = _pair(padding), _pair(k), _pair(s)
    if p == (0, 0):
        return "VALID"
    if s == (1, 1) and all(2 * pi == ki - 1 for pi, ki in zip(p, k)):
        return "SAME"
    return str(p[0]) if p[0] == p[1] else f"{p[0]}×{p[1]}"


def _conv_rows(index: int, conv: nn.Conv2d, x, y) -> list[Row]:
    """conv<index>, or per-tower rows conv<index>_1, _2 … and a concat row for a grouped conv."""
    g = conv.groups
    kh, kw = _pair(conv.kernel_size)
    c_in, c_out = x[1] // g, y[1] // g  # a kernel sees only its tower's channels
    units = y[2] * y[3] * c_out
    bias = 1 if conv.bias is not None else 0
    per_tower = dict(
        kernel=[kh, kw], depth=c_out, stride=_stride(conv.stride),
        padding=_padding(conv.padding, conv.kernel_size, conv.stride),
        input=[x[2], x[3], c_in], output=[y[2], y[3], c_out],
        parameters=sum(p.numel() for p in conv.parameters()) // g,
        connections=units * (kh * kw * c_in + bias), macs=units * kh * kw * c_in)
    if g == 1:
        return [Row(f"conv{index}", **per_tower)]
    rows = [Row(f"conv{index}_{t + 1}", **per_tower) for t in range(g)]
    rows.append(Row(f"concat{index}", kernel=None, depth=None, stride=None, padding=None,
                    input=None, output=_hwc(y), parameters=0, connections=0, macs=0))
    return rows


def _pool_row(name: str, pool: nn.Module, x, y) -> Row:
    if isinstance(pool, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        # Its window depends on the input size (at owt's 224 it is the identity): no fixed kernel.
        return Row(name, kernel=None, depth=y[1], stride=None, padding=None, input=_hwc(x),
                   output=_hwc(y), parameters=0, connections=0, macs=0)
    kh, kw = _pair(pool.kernel_size)
    return Row(name, kernel=[kh, kw], depth=y[1], stride=_stride(pool.stride),
               padding=_padding(pool.padding, pool.kernel_size, pool.stride),
               input=_hwc(x), output=_hwc(y), parameters=0,
               connections=y[1] * y[2] * y[3] * kh * kw, macs=0)


def _fc_row(index: int, fc: nn.Linear, before_flatten) -> Row:
    """An fc layer as the VALID conv it is: its input keeps the H×W×C of the map it flattens."""
    inp = _hwc(before_flatten) if before_flatten else [1, 1, fc.in_features]
    bias = 1 if fc.bias is not None else 0
    return Row(f"fc{index}", kernel=None, depth=fc.out_features, stride=None, padding=None,
               input=inp, output=[1, 1, fc.out_features],
               parameters=sum(p.numel() for p in fc.parameters()),
               connections=(fc.in_features + bias) * fc.out_features,
               macs=fc.in_features * fc.out_features)


class _Mismatch(Exception):
    """An fc layer got a flattened input of the wrong size (raised by a pre-hook, before torch)."""


def _trace(model: nn.Module, input_size: int) -> list[tuple[nn.Module, tuple, tuple]]:
    """One forward pass with hooks on every leaf module: [(module, input shape, output shape)]."""
    records, handles = [], []

    def record(module, inputs, output):
        records.append((module, tuple(inputs[0].shape), tuple(output.shape)))

    def check_fc(module, inputs):
        if inputs[0].shape[-1] != module.in_features:
            raise _Mismatch(module, records)

    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    weight = first_conv.weight  # the model's device and dtype (a float64 or bf16 model too)
    x = torch.zeros(1, first_conv.in_channels, input_size, input_size, device=weight.device,
                    dtype=weight.dtype)
    for module in model.modules():
        if not list(module.children()):
            handles.append(module.register_forward_hook(record))
        if isinstance(module, nn.Linear):
            handles.append(module.register_forward_pre_hook(check_fc))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return records


def _mismatch_message(fc: nn.Linear, records, input_size: int) -> str:
    n_conv = sum(isinstance(m, nn.Conv2d) for m, _, _ in records)
    n_fc = sum(isinstance(m, nn.Linear) for m, _, _ in records)
    _, _, last = next(r for r in reversed(records) if len(r[2]) == 4)
    h, w, c = _hwc(last)
    side = math.isqrt(fc.in_features // c) if fc.in_features % c == 0 else 0
    need = f"{side}×{side}×{c} = {fc.in_features:,}" if side * side * c == fc.in_features \
        else f"{fc.in_features:,}"
    return (f"fc{n_conv + n_fc + 1} needs {need} inputs, but input size {input_size} gives "
            f"{h}×{w}×{c} = {h * w * c:,}")


def layer_table(model: nn.Module, input_size: int | None = None) -> dict:
    """The layer table of `model` for square inputs of `input_size` (default: the model's own).

    Returns {"layers": [Row as dict], "total_parameters", "total_neurons", "total_macs"}; raises
    ValueError when the input size does not fit the network. Build the model on the meta device
    (`with torch.device("meta"):`) to trace it for free; a real model is traced with a real pass.
    """
    input_size = model.input_size if input_size is None else input_size
    if input_size < 1:
        raise ValueError(f"input size must be a positive integer, got {input_size}")
    if input_size > MAX_SIZE:  # past int64, torch.zeros fails with a TypeError, not a RuntimeError
        raise ValueError(f"input size {input_size} is too large: at most {MAX_SIZE}")
    try:
        records = _trace(model, input_size)
    except _Mismatch as e:
        raise ValueError(_mismatch_message(*e.args, input_size)) from None
    except RuntimeError as e:  # a pooling output of 0×0; above the net's own, a size overflow
        first = str(e).strip().splitlines()[0]
        how = "too large" if input_size > model.input_size else "too small"
        raise ValueError(f"input size {input_size} is {how} for this network: {first}") from None
    rows, neurons, n_conv, n_fc, before_flatten = [], 0, 0, 0, None
    for module, x, y in records:
        if isinstance(module, nn.Conv2d):
            n_conv += 1
            rows += _conv_rows(n_conv, module, x, y)
            neurons += y[1] * y[2] * y[3]
        elif isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
            rows.append(_pool_row("avgpool", module, x, y))  # torchvision's name
        elif isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
            rows.append(_pool_row(f"pool{n_conv}", module, x, y))  # named after its conv
        elif isinstance(module, nn.Linear):
            n_fc += 1
            rows.append(_fc_row(n_conv + n_fc, module, before_flatten))
            neurons += module.out_features
        # Remember the last feature map, so fc6's input reads 6×6×256, not 9216.
        if len(y) == 4:
            before_flatten = y
        elif isinstance(module, nn.Linear):
            before_flatten = None
    return {
        "layers": [asdict(r) for r in rows],
        "total_parameters": sum(p.numel() for p in model.parameters()),
        "total_neurons": neurons,
        "total_macs": sum(r.macs for r in rows),
    }


# --------------------------------------------------------------------------------------------------
# Rendering

HEADER = ("layer", "kernel", "depth", "stride", "padding", "input", "output", "parameters",
          "connections", "MACs")
KEYS = ("name", "kernel", "depth", "stride", "padding", "input", "output", "parameters",
        "connections", "macs")


def _dims(v) -> str:
    if v is None:
        return "—"
    return "×".join(str(d) for d in v) if isinstance(v, list) else str(v)


def _parameters(row: dict) -> str:
    """The source's way: the formula, then the number, e.g. (11·11·3+1)·96 = 34,944."""
    n = row["parameters"]
    if not n:
        return "—"
    # conv: (K·K·K_C + 1)·depth; fc: (inputs + 1)·outputs
    terms = [*row["kernel"], row["input"][2]] if row["kernel"] else [math.prod(row["input"])]
    if (math.prod(terms) + 1) * row["depth"] != n:  # no bias, or other parameters: just the number
        return f"{n:,}"
    return f"({'·'.join(map(str, terms))}+1)·{row['depth']} = {n:,}"


def _cells(row: dict) -> list[str]:
    count = lambda n: f"{n:,}" if n else "—"  # noqa: E731
    return [row["name"], _dims(row["kernel"]), _dims(row["depth"]), _dims(row["stride"]),
            row["padding"] or "—", _dims(row["input"]), _dims(row["output"]), _parameters(row),
            count(row["connections"]), count(row["macs"])]


def _totals(table: dict) -> str:
    return (f"total: {table['total_parameters']:,} parameters, {table['total_neurons']:,} neurons "
            f"(output units of the conv and fc layers), {table['total_macs']:,} multiply-accumulates")


def render(table: dict, fmt: str = "table") -> str:
    """The table as text: "table" (aligned columns), "markdown", "csv" or "json"."""
    if fmt == "json":
        return json.dumps(table, indent=2)
    if fmt == "csv":
        # Raw numbers for machines; the last row holds the totals that are sums of a column.
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(KEYS)
        for row in table["layers"]:
            writer.writerow([row["name"]] + [_dims(row[k]) if row[k] is not None else ""
                                             for k in KEYS[1:7]] +
                            [row["parameters"], row["connections"], row["macs"]])
        writer.writerow(["total", "", "", "", "", "", "", table["total_parameters"], "",
                         table["total_macs"]])
        return out.getvalue().rstrip("\n")
    rows = [_cells(r) for r in table["layers"]]
    if fmt == "markdown":
        lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
        lines += ["| " + " | ".join(cells) + " |" for cells in rows]
        return "\n".join(lines) + "\n\n" + _totals(table)
    if fmt != "table":
        raise ValueError(f"format must be one of {list(FORMATS)}, got {fmt!r}")
    widths = [max(len(c) for c in column) for column in zip(HEADER, *rows)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
             for cells in [list(HEADER), *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines) + "\n" + _totals(table)


# --------------------------------------------------------------------------------------------------
# The command

def add_arguments(parser) -> None:
    parser.add_argument("--variant", choices=VARIANTS, default="paper",
                        help="paper (the paper's two-tower net) or owt (torchvision's)")
    parser.add_argument("--input-size", type=int, default=None, metavar="N",
                        help="side of the square input (default: the variant's, 227 or 224)")
    parser.add_argument("--num-classes", type=int, default=1000, metavar="N")
    parser.add_argument("--format", choices=FORMATS, default="table")


def run(args) -> int:
    try:
        with torch.device("meta"):  # shapes only: nothing is allocated or computed
            model = alexnet(args.variant, num_classes=args.num_classes)
    except ValueError as e:
        raise AlexNetError(str(e), option="num_classes") from None
    try:
        table = layer_table(model, args.input_size)
    except AlexNetError:  # not the input size's (ALEXNET_LRN set wrong): as it is
        raise
    except ValueError as e:
        hint = ""
        if args.variant == "paper" and "fc6 needs" in str(e) and args.input_size < 227:
            # conv1 is 11×11 stride 4 with no padding: ⌈(227 − 11 + 1)/4⌉ = 55; 224 gives 54, and
            # pool5 ends at 5×5. Every size from 227 to 258 gives 6×6.
            hint = ("; the paper's \"224\" needs 227 with conv1's VALID 11×11 stride 4 "
                    "(⌈(227−11+1)/4⌉ = 55): use --input-size 227 (227 to 258 give 6×6)")
        raise AlexNetError(f"{e}{hint}", option="input_size") from None
    print(render(table, args.format))
    return 0

"""The layer table (`alexnet summary`) against the numbers written by hand from SPEC.md §1.

Every expected number below is typed from the source's table or the paper, not computed by the code
under test; the products are spelled out so that a reader can check them.
"""
import csv
import doctest
import io
import json
import math

import pytest
import torch

import alexnet.summary as summary
from alexnet import alexnet
from alexnet.cli import main
from alexnet.summary import (conv_output_size, connections, cross_entropy, layer_table, render,
                             same_output_size, softmax, valid_output_size)


def table_of(variant="paper", input_size=None, **options):
    with torch.device("meta"):
        model = alexnet(variant, **options)
    return layer_table(model, input_size)


@pytest.fixture(scope="module")
def paper():
    table = table_of("paper")
    table["rows"] = {row["name"]: row for row in table["layers"]}
    return table


# name: (input H×W×C, output H×W×C), the source's table (conv1 … pool2) and the paper (the rest).
PAPER_SHAPES = {
    "conv1": ([227, 227, 3], [55, 55, 96]),
    "pool1": ([55, 55, 96], [27, 27, 96]),
    "conv2_1": ([27, 27, 48], [27, 27, 128]),
    "conv2_2": ([27, 27, 48], [27, 27, 128]),
    "concat2": (None, [27, 27, 256]),
    "pool2": ([27, 27, 256], [13, 13, 256]),
    "conv3": ([13, 13, 256], [13, 13, 384]),
    "conv4_1": ([13, 13, 192], [13, 13, 192]),
    "conv4_2": ([13, 13, 192], [13, 13, 192]),
    "concat4": (None, [13, 13, 384]),
    "conv5_1": ([13, 13, 192], [13, 13, 128]),
    "conv5_2": ([13, 13, 192], [13, 13, 128]),
    "concat5": (None, [13, 13, 256]),
    "pool5": ([13, 13, 256], [6, 6, 256]),
    "fc6": ([6, 6, 256], [1, 1, 4096]),
    "fc7": ([1, 1, 4096], [1, 1, 4096]),
    "fc8": ([1, 1, 4096], [1, 1, 1000]),
}


def test_paper_rows_in_order_with_every_shape(paper):
    assert [row["name"] for row in paper["layers"]] == list(PAPER_SHAPES)
    for name, (inp, out) in PAPER_SHAPES.items():
        row = paper["rows"][name]
        assert (row["input"], row["output"]) == (inp, out), name


@pytest.mark.parametrize("name, kernel, depth, stride, padding, parameters", [
    # The source's table, row by row.
    ("conv1", [11, 11], 96, 4, "VALID", (11 * 11 * 3 + 1) * 96),
    ("pool1", [3, 3], 96, 2, "VALID", 0),
    ("conv2_1", [5, 5], 128, 1, "SAME", (5 * 5 * 48 + 1) * 128),
    ("conv2_2", [5, 5], 128, 1, "SAME", (5 * 5 * 48 + 1) * 128),
    ("concat2", None, None, None, None, 0),
    ("pool2", [3, 3], 256, 2, "VALID", 0),
    # The paper's continuation (SPEC.md §1).
    ("conv3", [3, 3], 384, 1, "SAME", (3 * 3 * 256 + 1) * 384),
    ("conv4_1", [3, 3], 192, 1, "SAME", (3 * 3 * 192 + 1) * 192),
    ("conv5_2", [3, 3], 128, 1, "SAME", (3 * 3 * 192 + 1) * 128),
    ("pool5", [3, 3], 256, 2, "VALID", 0),
    ("fc6", None, 4096, None, None, (9216 + 1) * 4096),
    ("fc7", None, 4096, None, None, (4096 + 1) * 4096),
    ("fc8", None, 1000, None, None, (4096 + 1) * 1000),
])
def test_source_columns(paper, name, kernel, depth, stride, padding, parameters):
    row = paper["rows"][name]
    assert (row["kernel"], row["depth"], row["stride"], row["padding"], row["parameters"]) == \
        (kernel, depth, stride, padding, parameters)


def test_source_parameter_numbers(paper):
    assert paper["rows"]["conv1"]["parameters"] == 34_944
    assert paper["rows"]["conv2_1"]["parameters"] == 153_728
    assert paper["rows"]["conv2_2"]["parameters"] == 153_728


def test_totals(paper):
    assert paper["total_parameters"] == 60_965_224
    assert sum(row["parameters"] for row in paper["layers"]) == 60_965_224
    # Output units of conv1 … conv5 and fc6 … fc8 (SPEC: "about 650,000 neurons").
    neurons = (55 * 55 * 96 + 27 * 27 * 256 + 13 * 13 * 384 + 13 * 13 * 384 + 13 * 13 * 256
               + 4096 + 4096 + 1000)
    assert neurons == 659_272
    assert paper["total_neurons"] == neurons
    # MACs: output units × weights each reads (a tower's channels for conv2, conv4, conv5).
    macs = (55 * 55 * 96 * 11 * 11 * 3 + 27 * 27 * 256 * 5 * 5 * 48 + 13 * 13 * 384 * 3 * 3 * 256
            + 13 * 13 * 384 * 3 * 3 * 192 + 13 * 13 * 256 * 3 * 3 * 192
            + 9216 * 4096 + 4096 * 4096 + 4096 * 1000)
    assert paper["total_macs"] == macs == 724_406_816


def test_connections_follow_the_source_formula(paper):
    rows = paper["rows"]
    assert rows["conv1"]["connections"] == 55 * 55 * (11 * 11 * 3 + 1) * 96 == 105_705_600
    assert rows["conv2_1"]["connections"] == connections(27, 5, 48, 128)
    assert rows["pool1"]["connections"] == 27 * 27 * 96 * 3 * 3  # each max reads 3×3, no bias
    for name in ("conv1", "conv2_1", "conv3", "conv4_2", "conv5_1", "fc6", "fc7", "fc8"):
        row = rows[name]  # weights read plus one bias per output unit
        assert row["connections"] == row["macs"] + math.prod(row["output"]), name
    for name in ("fc6", "fc7", "fc8"):  # an fc layer is a VALID conv over its whole input
        assert rows[name]["connections"] == rows[name]["parameters"]


def test_owt_table():
    table = table_of("owt")
    rows = {row["name"]: row for row in table["layers"]}
    assert list(rows) == ["conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool5",
                          "avgpool", "fc6", "fc7", "fc8"]  # no towers
    assert rows["conv1"]["padding"] == "2"  # 11×11/4 padded by 2: neither VALID nor SAME
    assert (rows["conv1"]["input"], rows["conv1"]["output"]) == ([224, 224, 3], [55, 55, 64])
    assert rows["conv2"]["output"] == [27, 27, 192]
    assert rows["avgpool"]["output"] == [6, 6, 256]
    assert rows["conv2"]["parameters"] == (5 * 5 * 64 + 1) * 192
    assert table["total_parameters"] == sum(r["parameters"] for r in table["layers"]) == 61_100_840


def test_one_tower_has_single_rows():
    rows = {row["name"]: row for row in table_of("paper", towers=1)["layers"]}
    assert "conv2" in rows and "conv2_1" not in rows and "concat2" not in rows
    assert rows["conv2"]["input"] == [27, 27, 96]
    assert rows["conv2"]["parameters"] == (5 * 5 * 96 + 1) * 256


def test_num_classes_and_grey_input():
    table = table_of("paper", num_classes=10, in_channels=1)
    rows = {row["name"]: row for row in table["layers"]}
    assert rows["fc8"]["output"] == [1, 1, 10]
    assert rows["conv1"]["input"] == [227, 227, 1]
    assert table["total_parameters"] == 60_965_224 - 2 * 11 * 11 * 96 - 990 * 4097


@pytest.mark.parametrize("size", [227, 256, 258])
def test_paper_input_sizes_that_give_6x6(size):
    assert table_of("paper", size)["layers"][-4]["output"] == [6, 6, 256]  # pool5


@pytest.mark.parametrize("size, got", [(224, "5×5×256"), (226, "5×5×256"), (259, "7×7×256")])
def test_paper_input_sizes_that_do_not(size, got):
    with pytest.raises(ValueError, match=f"fc6 needs 6×6×256 = 9,216 inputs.*gives {got}"):
        table_of("paper", size)


def test_too_small_and_too_large_inputs():
    with pytest.raises(ValueError, match="too small"):
        table_of("owt", 40)
    with pytest.raises(ValueError, match="99999999999 is too large"):  # was called too small
        table_of("paper", 99999999999)
    with pytest.raises(ValueError, match="positive"):
        table_of("owt", 0)


def test_real_model_gives_the_meta_table():
    torch.manual_seed(0)
    assert layer_table(alexnet("owt", num_classes=10)) == table_of("owt", num_classes=10)


# --------------------------------------------------------------------------------------------------
# Formulas and the softmax example

def test_output_size_formulas_on_the_source_layers():
    assert conv_output_size(227, 11, 4) == 55       # conv1
    assert conv_output_size(224, 11, 4, 2) == 55    # torchvision's conv1
    assert conv_output_size(224, 11, 4) == 54       # why the paper's "224" does not work
    assert valid_output_size(227, 11, 4) == 55
    assert valid_output_size(55, 3, 2) == 27        # pool1
    assert valid_output_size(27, 3, 2) == 13        # pool2
    assert valid_output_size(13, 3, 2) == 6         # pool5
    assert same_output_size(27) == 27               # conv2
    assert same_output_size(13) == 13               # conv3 … conv5
    assert same_output_size(227, 4) == 57


def test_valid_and_same_agree_with_the_general_formula():
    for f_in in range(11, 300):
        for k, s in [(11, 4), (3, 2), (2, 2), (5, 1), (3, 1)]:
            assert valid_output_size(f_in, k, s) == conv_output_size(f_in, k, s, 0)
            if s == 1:  # SAME at stride 1 is padding (k − 1)/2 on each side
                assert same_output_size(f_in, s) == conv_output_size(f_in, k, s, (k - 1) // 2)


def test_softmax_example():
    p = softmax([2, 0.5, -3])
    assert [round(v, 2) for v in p] == [0.81, 0.18, 0.01]
    assert sum(p) == pytest.approx(1.0)
    assert cross_entropy([2, 0.5, -3], 0) == pytest.approx(0.21, abs=0.005)
    assert cross_entropy([2, 0.5, -3], 0) == pytest.approx(-math.log(p[0]))  # natural log
    assert cross_entropy([2, 0.5, -3], 2) > 5  # a confident wrong answer costs a lot
    assert softmax([1000.0, 0.0]) == pytest.approx([1.0, 0.0])  # no overflow


def test_docstring_examples():
    result = doctest.testmod(summary)
    assert result.attempted >= 7 and result.failed == 0


# --------------------------------------------------------------------------------------------------
# Output formats, through the command

def run_summary(capsys, *args):
    code = main(["summary", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_json_keys(capsys):
    code, out, _ = run_summary(capsys, "--format", "json")
    assert code == 0
    data = json.loads(out)
    assert set(data) == {"layers", "total_parameters", "total_neurons", "total_macs"}
    assert data["total_parameters"] == 60_965_224
    for row in data["layers"]:
        assert set(row) == {"name", "kernel", "depth", "stride", "padding", "input", "output",
                            "parameters", "connections", "macs"}
        assert len(row["output"]) == 3 and all(isinstance(d, int) for d in row["output"])
    assert data["layers"][0]["input"] == [227, 227, 3]


def test_csv_parses(capsys):
    code, out, _ = run_summary(capsys, "--format", "csv", "--variant", "owt")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert rows[0]["name"] == "conv1" and rows[0]["output"] == "55×55×64"
    assert int(rows[0]["parameters"]) == (11 * 11 * 3 + 1) * 64
    assert rows[-1]["name"] == "total" and int(rows[-1]["parameters"]) == 61_100_840
    assert sum(int(r["parameters"]) for r in rows[:-1]) == 61_100_840


def test_markdown_has_a_header_row(capsys):
    code, out, _ = run_summary(capsys, "--format", "markdown")
    lines = out.splitlines()
    assert code == 0
    assert lines[0].startswith("| layer | kernel | depth | stride | padding | input | output |")
    assert set(lines[1]) == {"|", "-"}
    assert "| conv2_1 | 5×5 | 128 | 1 | SAME | 27×27×48 | 27×27×128 | (5·5·48+1)·128 = 153,728 |" \
        in out
    assert sum(line.startswith("| ") for line in lines) == 1 + len(PAPER_SHAPES)


def test_text_table_and_totals(capsys):
    code, out, _ = run_summary(capsys)
    assert code == 0
    assert out.splitlines()[0].split() == ["layer", "kernel", "depth", "stride", "padding", "input",
                                           "output", "parameters", "connections", "MACs"]
    assert "(11·11·3+1)·96 = 34,944" in out
    assert "total: 60,965,224 parameters, 659,272 neurons" in out


def test_bad_input_size_is_one_line(capsys):
    code, out, err = run_summary(capsys, "--input-size", "224")
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1
    assert "fc6 needs 6×6×256" in err and "227" in err and "VALID" in err
    assert err.strip().endswith("(--input-size)")


@pytest.mark.parametrize("flags, option", [(["--input-size", "0"], "--input-size"),
                                           (["--input-size", "300"], "--input-size"),
                                           (["--num-classes", "0"], "--num-classes"),
                                           # past int64: a TypeError from torch.zeros/nn.Linear
                                           (["--input-size", "9" * 23], "--input-size"),
                                           (["--num-classes", "9" * 23], "--num-classes"),
                                           # fits int64, but fc8's byte count does not
                                           (["--num-classes", str(2**63 - 1)], "--num-classes")])
def test_bad_sizes_name_their_option(capsys, flags, option):
    code, _, err = run_summary(capsys, *flags)
    assert code == 2 and err.strip().endswith(f"({option})") and len(err.splitlines()) == 1
    assert "224" not in err or flags[1] != "300"  # the 224 hint is for sizes below 227 only


def test_unknown_format():
    with pytest.raises(ValueError, match="format"):
        render(table_of("owt"), "xml")


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_layer_table_of_a_model_in_another_dtype(dtype):
    with torch.device("meta"):
        model = alexnet("paper").to(dtype)  # traced in float32 before: "Input type (float) and
    assert layer_table(model)["total_parameters"] == 60_965_224  # bias type (double)"


def test_cross_entropy_of_a_vanishing_probability():
    # −log softmax computed as log-sum-exp: log(0) was a "math domain error"
    assert cross_entropy([1000, 0], 1) == pytest.approx(1000.0)
    assert cross_entropy([2, 0.5, -3], 0) == pytest.approx(-math.log(math.exp(2) / (
        math.exp(2) + math.exp(0.5) + math.exp(-3))), rel=1e-12)

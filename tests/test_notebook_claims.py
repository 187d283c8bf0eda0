"""The notebooks say only what their cells measured.

- `claim` (notebooks/_setup.py) prints a finding that holds, with its numbers, and raises on one that does not,
  naming both numbers, so a notebook whose prose and outputs part fails when it is executed.
- Every notebook's markdown quotes no measured number: a decimal (0.38) or a percentage (74%) in prose is a number
  some cell should print instead. Constants of the world and configs are written as code (`demo_correct=0.65`)
  or inside an equation ($T = 0.15$), where this check does not look.
- No output prints "± 0.000": a standard error of zero means one sample, and one sample has no spread to show.
- Every `claim(...)` in a checked notebook printed its check mark in the committed outputs.

Read from the committed .ipynb files; nothing is executed here (CI executes the notebooks themselves).
"""
import doctest
import importlib.util
import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"

# Notebooks still to be rewritten for issue 16 (their prose quotes numbers); the lead empties this set.
NOT_YET_CHECKED: set[str] = set()

# (notebook, figure as written) that may stay in markdown: keep this short, and say why for each.
ALLOWED: set[tuple[str, str]] = set()


def load_setup():
    """notebooks/_setup.py as a module, without putting notebooks/ on sys.path."""
    spec = importlib.util.spec_from_file_location("_setup", NOTEBOOKS / "_setup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------- claim


@pytest.fixture(scope="module")
def setup():
    return load_setup()


def test_a_true_claim_prints_a_check_mark_and_its_numbers(setup, capsys):
    setup.claim("SFT answers more often", 0.971, ">", 0.002)
    assert capsys.readouterr().out == "✓ SFT answers more often: 0.971 > 0.002\n"


def test_a_false_claim_raises_naming_the_statement_and_both_numbers(setup):
    with pytest.raises(AssertionError) as info:
        setup.claim("SFT's gold is above the demonstrators'", -0.017, ">", 0.237)
    message = str(info.value)
    assert "SFT's gold is above the demonstrators'" in message and "-0.017" in message and "0.237" in message, (
        f"a failed claim should say what was claimed and both numbers it compared: {message!r}")


@pytest.mark.parametrize("a, b, se, holds", [
    (0.50, 0.40, (0.03, 0.03), True),  # gap 0.10 > 2 * 0.042
    (0.50, 0.45, (0.03, 0.03), False),  # gap 0.05 < 2 * 0.042: inside the noise
    (0.50, 0.45, 0.02, True),  # one SE of the difference (paired samples): gap 0.05 > 0.04
])
def test_above_needs_more_than_two_standard_errors(setup, a, b, se, holds, capsys):
    if holds:
        setup.claim("a is above b", a, ">", b, se=se)
        assert "2 SE" in capsys.readouterr().out, "a claim with standard errors should print the margin it used"
    else:
        with pytest.raises(AssertionError, match="a is above b"):
            setup.claim("a is above b", a, ">", b, se=se)
    with pytest.raises(AssertionError):  # and never the other way round
        setup.claim("b is below... a", a, "<", b, se=se)


def test_no_measurable_difference_holds_within_two_standard_errors_only(setup, capsys):
    setup.claim("no difference", 0.774, "~", 0.750, se=(0.015, 0.015))  # gap 0.024 < 2 * 0.021
    assert capsys.readouterr().out.startswith("✓ no difference: 0.774 ± 0.015 ~ 0.75 ± 0.015")
    with pytest.raises(AssertionError, match="0.774 .* 0.65"):
        setup.claim("no difference", 0.774, "~", 0.650, se=(0.015, 0.015))
    with pytest.raises(ValueError, match="needs the standard errors"):
        setup.claim("no difference", 0.774, "~", 0.750)


def test_not_measurably_below_allows_a_shortfall_inside_the_noise(setup):
    setup.claim("the RM is at or near the labelers", 0.90, ">=", 0.93, se=0.02)  # 0.03 short, 2 SE = 0.04
    with pytest.raises(AssertionError, match="0.85 >= 0.93"):
        setup.claim("the RM is at or near the labelers", 0.85, ">=", 0.93, se=0.02)
    setup.claim("at most the ceiling", 0.93, "<=", 0.93)  # exact: equality is allowed
    with pytest.raises(AssertionError):
        setup.claim("at most the ceiling", 0.94, "<=", 0.93)


def test_equal_and_below_and_an_unknown_relation(setup):
    setup.claim("no token differs", 0, "==", 0)
    setup.claim("below a threshold", 0.1, "<", 0.2)
    with pytest.raises(AssertionError, match="3 == 4"):
        setup.claim("equal", 3, "==", 4)
    with pytest.raises(ValueError, match="relation"):
        setup.claim("bigger", 3, "=>", 2)


def test_a_zero_standard_error_is_not_printed(setup, capsys):
    setup.claim("one sample", 0.3, ">", 0.1, se=(0.0, 0.05))
    assert "± 0 " not in capsys.readouterr().out


def test_mean_se_is_per_kinds_standard_error(setup):
    mean, se = setup.mean_se([0.0, 1.0, 0.0, 1.0])
    assert (mean, se) == (0.5, 0.25), "std / sqrt(n) with the population std, as evaluation.per_kind's gold_se"


def test_equal_values_with_no_spread_are_not_measurably_different(setup, capsys):
    setup.claim("both reward models refuse every secret", 1.0, "~", 1.0, se=(0.0, 0.0))
    assert capsys.readouterr().out.startswith("✓ both reward models refuse every secret: 1 ~ 1")
    with pytest.raises(AssertionError, match="does not hold"):
        setup.claim("no spread, different values", 1.0, "~", 0.9, se=(0.0, 0.0))


def test_claims_docstring_example_runs(setup):
    # The examples of claim's own docstring, run with _setup's globals. Not doctest.testmod(setup): when another
    # test has imported notebooks/_setup.py as `_setup` too, testmod takes claim for that module's and skips it.
    runner = doctest.DocTestRunner(verbose=False)
    for test in doctest.DocTestFinder().find(setup.claim, "claim", globs=vars(setup)):
        runner.run(test)
    failures, tried = runner.summarize(verbose=False)
    assert tried >= 2 and failures == 0, "claim's docstring example should show what it prints and raises"


# ---------------------------------------------------------------- the notebooks' markdown and outputs

# Not read: fenced code, inline code, equations, links. A figure: a decimal or a percentage standing alone
# (not a section number like §3.5, a version like 0.4.30 or a size like 1.3B).
NOT_PROSE = re.compile(r"```.*?```|`[^`\n]*`|\$\$.*?\$\$|\$[^$\n]*\$|\]\([^)]*\)|https?://\S+", re.S)
FIGURE = re.compile(r"(?<![\w.§])\d+\.\d+(?![\w.])|(?<![\w.§])\d+(?:\.\d+)?\s?%")
ZERO_SPREAD = re.compile(r"±\s*0(?:\.0+)?(?![\d.])")


def notebook_cells(name: str) -> list[dict]:
    return json.loads((NOTEBOOKS / f"{name}.ipynb").read_text())["cells"]


def text_of(cell: dict) -> str:
    return "".join(cell["source"])


def outputs_of(cell: dict) -> str:
    parts = []
    for out in cell.get("outputs", []):
        parts.append("".join(out.get("text", "")))
        parts.append("".join(out.get("data", {}).get("text/plain", "")))
        parts.append("\n".join(out.get("traceback", [])))
    return "\n".join(parts)


def figures_in_markdown(text: str) -> list[str]:
    return FIGURE.findall(NOT_PROSE.sub(" ", text))


NAMES = sorted(p.stem for p in NOTEBOOKS.glob("[0-9]*.ipynb"))


def checked(name: str):
    """A notebook not yet converted is tried, but may fail (xfail) until the lead removes it from the set."""
    marks = [pytest.mark.xfail(reason="not yet rewritten for issue 16", strict=False)] if name in NOT_YET_CHECKED else []
    return pytest.param(name, marks=marks)


def test_the_figure_rule_catches_measured_numbers_and_spares_code_and_equations():
    assert figures_in_markdown("gold rises from -0.505 to 0.237, and 74% answer") == ["0.505", "0.237", "74%"]
    assert figures_in_markdown("`demo_correct=0.65`, $T = 0.15$, InstructGPT §3.5, jax 0.4.30, a 1.3B model, "
                               "Ba et al. 2016, 4,000 documents") == []


@pytest.mark.parametrize("name", [checked(n) for n in NAMES])
def test_markdown_quotes_no_measured_number(name):
    found = [(i, f) for i, c in enumerate(notebook_cells(name)) if c["cell_type"] == "markdown"
             for f in figures_in_markdown(text_of(c)) if (name, f) not in ALLOWED]
    assert not found, (f"{name}: markdown cells quote figures {found} (cell index, figure). Print measured numbers "
                       f"from a cell and state the finding with claim(); write config values as code (`x=0.65`).")


@pytest.mark.parametrize("name", [checked(n) for n in NAMES])
def test_no_output_prints_a_zero_standard_error(name):
    found = [i for i, c in enumerate(notebook_cells(name)) if c["cell_type"] == "code"
             and ZERO_SPREAD.search(outputs_of(c))]
    assert not found, f"{name}: cells {found} print '± 0.000': one seed or one sample has no spread; print the value"


@pytest.mark.parametrize("name", [checked(n) for n in NAMES])
def test_every_claim_printed_its_check_mark(name):
    cells = [(i, c) for i, c in enumerate(notebook_cells(name)) if c["cell_type"] == "code" and "claim(" in text_of(c)]
    assert cells, f"{name}: no claim() cell; every finding the markdown states should be checked by one"
    for i, c in cells:
        calls, marks = text_of(c).count("claim("), outputs_of(c).count("✓ ")
        assert marks >= calls and "AssertionError" not in outputs_of(c), (
            f"{name}, cell {i}: {calls} claim() calls but {marks} check marks in the committed outputs: "
            f"execute the notebook again with the current code and commit its outputs")

"""Numbers in answers, read exactly: what the `numeric` verifier compares ("1,234", "3/4", "2.5e-3", "50%").

Split from verifiers.py: parsing a written number is one concept with its own hostile inputs (a reference of
"1/" and 5000 digits, "1e" and 5000 digits), and every one of them must read as "not a number", never raise.
"""

from __future__ import annotations

import re
from fractions import Fraction

from .answer import normalise_answer

_FRAC_LATEX = re.compile(r"^([+-]?)\\[dt]?frac\s*\{\s*([+-]?[\d.,]+)\s*\}\s*\{\s*([\d,]+)\s*\}$")
_DIGITS = r"(?:\d{1,3}(?:,\d{3})+|\d+)"  # "1,234,567" (groups of three) or plain digits; "1,23" is not a number
_NUMERIC = re.compile(
    rf"""^(?P<sign>[+-])?\s*
    (?P<int>{_DIGITS})?(?:\.(?P<dec>\d*))?            # 12 / 12.5 / .5 / 12.
    (?:\s*/\s*(?P<den>{_DIGITS})                      # a fraction 3/4
      |(?:[eE](?P<exp>[+-]?\d+)                       # or scientific notation 2.5e-3
         |\s*(?:[x\u00d7*\u00b7]|\\times|\\cdot)\s*10\s*\^\s*\{{?\s*(?P<exp10>[+-]?\d+)\s*\}}?))?  # or 2.5 x 10^-3
    \s*(?P<pct>\\?%)?$""",
    re.VERBOSE,
)
_MAX_EXPONENT = 1000  # "1e999999999" would take minutes to expand exactly: such a reply is not a number


def parse_number(text: str, percent_as_fraction: bool = False) -> Fraction | None:
    """The exact value `text` writes, or None: ints, decimals, thousands separators ("1,234.5"), fractions
    ("-3/4", "\\frac{3}{4}"), scientific notation ("2.5e-3", "2.5 \\times 10^{-3}"), a `%` sign (ignored, or /100
    with `percent_as_fraction`), after `normalise_answer`'s stripping (so "$1,000." reads 1000). A comma is only
    ever a thousands separator: "0,5" is not a number rather than a guess. Exact (Fraction) so that huge values and
    tolerances compare without float overflow."""
    text = normalise_answer(text, case_sensitive=True).replace("\u2212", "-")  # the Unicode minus sign
    latex = _FRAC_LATEX.match(text)
    if latex:
        text = f"{latex.group(1)}{latex.group(2)}/{latex.group(3)}"
    m = _NUMERIC.match(text)
    if not m or (m["int"] is None and not m["dec"]):
        return None
    written = m["exp"] or m["exp10"] or "0"
    digits = written.lstrip("+-").lstrip("0") or "0"
    if len(digits) > len(str(_MAX_EXPONENT)):  # before int(): "1e" + 5000 digits is past what int() converts
        return None
    exp = -int(digits) if written.startswith("-") else int(digits)
    if abs(exp) > _MAX_EXPONENT:
        return None
    try:  # more digits than Python converts (int_max_str_digits), in the number or its denominator: not a number
        value = Fraction(f"{(m['int'] or '0').replace(',', '')}.{m['dec'] or '0'}")
        den = None if m["den"] is None else int(m["den"].replace(",", ""))
    except ValueError:
        return None
    if den is not None:
        if den == 0:
            return None
        value /= den
    value *= Fraction(10) ** exp
    if m["pct"] and percent_as_fraction:
        value /= 100
    return -value if m["sign"] == "-" else value


def numbers_close(a: Fraction, b: Fraction, rel_tol: float, abs_tol: float) -> bool:
    """math.isclose's rule (|a - b| <= max(rel_tol * max(|a|, |b|), abs_tol)) in exact arithmetic."""
    return abs(a - b) <= max(Fraction(rel_tol) * max(abs(a), abs(b)), Fraction(abs_tol))


def numeric_score(candidate: str, reference: str, rel_tol: float = 1e-6, abs_tol: float = 1e-9,
                  percent_as_fraction: bool = False) -> float:
    """1.0 when both parse (`parse_number`) and are equal within the tolerances; unparsable text scores 0."""
    a, b = parse_number(candidate, percent_as_fraction), parse_number(reference, percent_as_fraction)
    return 1.0 if a is not None and b is not None and numbers_close(a, b, rel_tol, abs_tol) else 0.0

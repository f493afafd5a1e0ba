"""The README's Python sessions (```pycon blocks) run as doctests: their outputs are
exactly what Python prints, so they cannot rot (issue 12, item 7)."""
import doctest
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"^```pycon\n(.*?)^```$", README.read_text(), flags=re.S | re.M)


def test_the_readme_has_a_python_session():
    assert BLOCKS, "README.md has no ```pycon block"
    assert any("quantize_forward" in block for block in BLOCKS)


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_session_prints_what_it_shows(index):
    test = doctest.DocTestParser().get_doctest(BLOCKS[index], {}, f"README.md pycon block {index}",
                                               str(README), 0)
    assert test.examples
    runner = doctest.DocTestRunner(optionflags=0)   # exact output, whitespace included
    runner.run(test)
    failed, attempted = runner.summarize(verbose=False)
    assert attempted == len(test.examples) and failed == 0, f"README.md pycon block {index} differs"

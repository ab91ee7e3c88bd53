"""The prose-numbers rule (``tests/prose_numbers.py``, applied by ``conftest.py`` to every notebook nbval runs)
flags a percentage the prose quotes that no output printed, and only that."""
from tests.prose_numbers import output_text, printed_numbers, prose_percentages, unprinted


def test_a_drifted_number_is_flagged():
    # notebook 02's old drift: the prose said 64.2 % where the run printed 70.0 %
    assert unprinted(["seed 0 at μ = 0.5 reaches 64.2 % kNN"], ["bank init features: kNN recomputed 70.0%"]) == ["64.2"]


def test_printed_numbers_pass_in_either_form():
    outs = ["kNN 66.7 %, linear 59.9%", "{'knn_top1': 0.5732}"]
    assert unprinted(["66.7 % kNN against 59.9 %; eq. 1 57.3 %"], outs) == []


def test_the_papers_numbers_and_ranges():
    assert unprinted(["the paper's 80.8 % (Table 1)"], []) == []
    assert prose_percentages("from 41.3–43.2 % and `x = 12.5 %` and $5\\%$") == ["41.3", "43.2"]
    assert unprinted(["a plateau of 41.3–43.2 %"], ["41.3"]) == ["43.2"]


def test_decimals_must_match():
    """66.7 printed does not account for 66.70 % or 67 %: the prose quotes what the output shows."""
    assert printed_numbers(["66.7"]) == {"66.7"}
    assert unprinted(["67 %"], ["66.7 %"]) == ["67"]


def test_output_text_reads_streams_and_results():
    assert output_text({"output_type": "stream", "text": "a 1.0 %"}) == "a 1.0 %"
    assert "0.25" in output_text({"output_type": "execute_result", "data": {"text/plain": "0.25"}})

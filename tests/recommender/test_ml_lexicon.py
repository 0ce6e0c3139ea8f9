import pytest

from recommender.ml.lexicon import MAX_HEADLINE_CHARS, VaderBaseline, review_text


@pytest.mark.parametrize(("headline", "body", "read"), [
    ("Runs small", "Returned it.", "Runs small. Returned it."),
    ("  Love it!  ", "Wearing it daily.", "Love it! Wearing it daily."),
    ("Sizing?", "Order one up.", "Sizing? Order one up."),
    (None, "Only a body.", "Only a body."),
    ("   ", "Only a body.", "Only a body."),
    ("Only a headline", "", "Only a headline"),
    ("Great dress (with pockets!)", "Buy it.", "Great dress (with pockets!) Buy it."),
    (5, "A number is no headline.", "A number is no headline."),
    ("x" * 300, "Body.", "x" * MAX_HEADLINE_CHARS + ". Body."),
])
def test_a_reviews_headline_is_read_first_as_a_sentence_of_its_own(headline, body, read):
    assert review_text(body, headline) == read


def test_a_headline_can_carry_the_verdict_the_body_leaves_out():
    vader = VaderBaseline()
    body = "I wore it to a wedding on Saturday."
    plain, headed = vader.predict([body, review_text(body, "Terrible, awful fabric")])
    assert plain[0] != "negative" and headed[0] == "negative"

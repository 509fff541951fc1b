"""Masking: every secret of every job, multi-line secrets line by line, the 64 KiB cut, index credentials."""

from __future__ import annotations

from kirby.tasks.masking import (
    Masker,
    index_credentials,
    redact_url,
    secret_pieces,
    short_secret_error,
)


def test_each_occurrence_anywhere_is_masked_longest_first():
    mask = Masker(["s3cret", "s3cret-longer"])
    assert mask("a s3cret-longer and s3cret, s3crets") == "a *** and ***, ***s"


def test_a_multi_line_secret_is_masked_line_by_line():
    pem = "-----BEGIN PRIVATE KEY-----\r\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n  bKcwggSjAgEAAoIBAQC7  \n-----END PRIVATE KEY-----\n"
    mask = Masker([pem])
    printed = [line for line in pem.splitlines()]
    assert [mask(line) for line in printed] == ["***", "***", "  ***  ", "***"]


def test_short_pieces_are_not_masks_and_short_secrets_are_refused():
    assert secret_pieces(["ab", "x\nlong-enough\n", "", None]) == {"long-enough"}
    assert "shorter than 3 characters" in short_secret_error("PIN", "12")
    assert "do not mark it secret" in short_secret_error("PIN", " 1 ")
    assert short_secret_error("PIN", "123") is None


def test_with_values_adds_the_run_s_own_secrets():
    base = Masker(["other-job-value"])
    both = base.with_values(["own-value"])
    assert both("other-job-value own-value") == "*** ***"
    assert base.with_values(["other-job-value"]) is base
    assert base("own-value") == "own-value"  # immutable


def test_the_start_of_a_secret_left_at_a_cut_is_masked():
    mask = Masker(["abcdef-secret"])
    assert mask.mask_cut("x" * 10 + "abcdef-sec") == "x" * 10 + "***"
    assert mask.mask_cut("x" * 10 + "abc\ufffd") == "x" * 10 + "***"  # a character split by the cut
    assert mask.mask_cut("nothing here") == "nothing here"


def test_index_credentials_and_redaction():
    index = "https://ci:p%40ss-word@pypi.example/simple/"
    assert set(index_credentials(index)) == {"p%40ss-word", "p@ss-word", "ci:p%40ss-word", "ci:p@ss-word"}
    assert index_credentials("http://pypi.example/simple/") == [] and index_credentials("/srv/wheels") == []
    assert redact_url(index) == "https://ci:***@pypi.example/simple/"
    assert Masker(index_credentials(index))(f"GET {index}") == "GET https://***@pypi.example/simple/"

"""Which blocks of the docs run, and what they claim: tests/docblocks.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.docblocks import DocError, documents, missing_lines, output_lines, parse, read

REPO = Path(__file__).resolve().parents[2]
F = "```"


def one(text: str):
    (block,) = parse(text, "doc.md")
    return block


@pytest.mark.parametrize(
    ("lang", "kind"),
    [
        ("sh", "sh"),
        ("bash", "sh"),
        ("console", "console"),
        ("python", "python"),
        ("", "shown"),
        ("text", "shown"),
        ("toml", "shown"),
        ("json", "shown"),
    ],
)
def test_the_language_tag_decides_whether_a_block_runs(lang: str, kind: str) -> None:
    block = one(f"{F}{lang}\nx\n{F}\n")
    assert block.kind == kind
    assert block.runnable == (kind != "shown")


def test_an_unknown_language_tag_is_an_error_not_a_silent_skip() -> None:
    with pytest.raises(DocError, match=r"doc.md:3: language tag 'py'"):
        parse(f"# t\n\n{F}py\nprint(1)\n{F}\n", "doc.md")


def test_blocks_keep_their_line_text_and_order() -> None:
    blocks = parse(f"a\n{F}sh\necho 1\n{F}\nb\n~~~python\nprint(2)\n~~~\n", "doc.md")
    assert [(b.where, b.lang, b.text) for b in blocks] == [
        ("doc.md:2", "sh", "echo 1\n"),
        ("doc.md:6", "python", "print(2)\n"),
    ]


def test_a_fence_in_a_list_item_is_dedented_and_a_longer_fence_holds_a_shorter_one() -> None:
    assert one(f"- item\n\n  {F}sh\n  echo hi\n    two\n  {F}\n").text == "echo hi\n  two\n"
    assert one(f"````text\n{F}sh\nx\n{F}\n````\n").text == f"{F}sh\nx\n{F}\n"


def test_an_unclosed_fence_is_an_error() -> None:
    with pytest.raises(DocError, match="doc.md:1: the fence opened here is never closed"):
        parse(f"{F}sh\necho\n", "doc.md")


def test_a_skip_needs_its_annotation_right_before_the_block_and_a_reason() -> None:
    blocks = parse(
        f"<!-- not run by tests: it is the suite -->\n\n{F}sh\n./netserv test\n{F}\n"
        f"{F}sh\n./netserv demo\n{F}\n",
        "doc.md",
    )
    assert [b.skipped for b in blocks] == [True, False]
    assert blocks[0].note("skip").why == "it is the suite"
    with pytest.raises(DocError, match="doc.md:1: an HTML comment speaks of tests"):
        parse(f"<!-- not run by tests -->\n{F}sh\nx\n{F}\n", "doc.md")
    with pytest.raises(DocError, match="doc.md:1: an annotation must be right before a block"):
        parse(f"<!-- not run by tests: why -->\nprose\n{F}sh\nx\n{F}\n", "doc.md")
    with pytest.raises(DocError, match="right before a block"):
        parse("text\n<!-- not run by tests: why -->\n", "doc.md")


def test_other_html_comments_are_ignored() -> None:
    assert one(f"<!-- a note for editors -->\n{F}sh\nx\n{F}\n").notes == ()


def test_annotations_must_fit_their_block() -> None:
    with pytest.raises(DocError, match="only a block that would run"):
        parse(f"<!-- not run by tests: why -->\n{F}text\nx\n{F}\n", "doc.md")
    with pytest.raises(DocError, match="an output block must be a shown block"):
        parse(f"<!-- output checked by tests: why -->\n{F}sh\nx\n{F}\n", "doc.md")
    with pytest.raises(DocError, match=r"unknown setting\(s\) \['switch'\]"):
        parse(f"<!-- tests set up controller+switch: why -->\n{F}sh\nx\n{F}\n", "doc.md")
    with pytest.raises(DocError, match="`node` needs `controller`"):
        parse(f"<!-- tests set up node: why -->\n{F}sh\nx\n{F}\n", "doc.md")
    with pytest.raises(DocError, match="either skipped or saved"):
        parse(
            f"<!-- not run by tests: a -->\n<!-- saved by tests as x.py: b -->\n"
            f"{F}python\nx\n{F}\n",
            "doc.md",
        )


def test_saved_output_and_setting_annotations() -> None:
    saved = one(f"<!-- saved by tests as tally_session.py: run below -->\n{F}python\nx\n{F}\n")
    assert saved.saved_as == "tally_session.py" and not saved.skipped
    shown = one(f"<!-- output checked by tests: the demo's -->\n{F}\n== a\n   [ok] b\n\n{F}\n")
    assert shown.note("output") is not None
    assert output_lines(shown) == ["== a", "[ok] b"]
    setting = one(f"<!-- tests set up controller+bridge: why -->\n{F}sh\nx\n{F}\n")
    assert setting.setting == ("controller", "bridge")
    assert one(f"{F}sh\nx\n{F}\n").setting is None


def test_a_block_of_lines_ending_in_ampersand_is_long_running() -> None:
    block = one(
        f"{F}sh\n# start both\nnetserv controller &   # REST on 8080\n"
        f"netserv agent --dpid 1 &\n{F}\n"
    )
    assert block.background_commands() == ["netserv controller", "netserv agent --dpid 1"]
    assert one(f"{F}sh\nmake && make install\n{F}\n").background_commands() == []
    assert one(f"{F}python\nx = 1 &\n{F}\n").background_commands() == []


def test_a_block_mixing_long_running_and_other_commands_is_an_error() -> None:
    with pytest.raises(DocError, match="doc.md:1: a block mixes commands ending in ` &`"):
        parse(f"{F}sh\nnetserv controller &\nnetserv nodes\n{F}\n", "doc.md")


def test_prints_comments_are_claims_about_the_output() -> None:
    block = one(
        f"{F}sh\npython x.py   # prints {{'small': 3, 'large': 2}}\n"
        f'netserv nodes  # prints `"ready": true`: switch connected\n'
        f"netserv list   # lists the sessions\n{F}\n"
    )
    assert block.claims() == ["{'small': 3, 'large': 2}", '"ready": true']


def test_a_console_block_runs_its_prompted_commands_and_claims_the_rest() -> None:
    block = one(f"{F}console\n$ echo a \\\n  b\na b\n$ true\n\n{F}\n")
    assert block.script() == "echo a \\\n  b\ntrue\n"
    assert block.claims() == ["a b"]


def test_expected_lines_appear_in_order_with_ellipsis_for_any_text() -> None:
    output = "== start\n   flow: cookie=0x1, duration=0.01s, priority=5\n   [ok] done\n"
    assert (
        missing_lines(["== start", "flow: cookie=0x1, ... priority=5", "[ok] done"], output) == []
    )
    assert missing_lines(["[ok] done", "== start"], output) == ["== start"]
    assert missing_lines(["[ok] don"], output) == ["[ok] don"]  # whole lines, not parts


def test_the_repositorys_docs_follow_the_rules() -> None:
    docs = documents(REPO)
    assert docs[0] == REPO / "README.md"
    assert REPO / "docs" / "modules.md" in docs
    for doc in docs:
        for block in read(REPO, doc):
            if block.skipped:
                assert block.note("skip").why.strip()

"""bAbI reader: stories, questions, supporting facts, and errors that name file and line."""

from __future__ import annotations

import pytest

from rmt.tasks.babilong.babi import BabiFormatError, BabiSample, read_babi, task_from_filename

QA1 = """1 Mary moved to the bathroom.
2 John went to the hallway.
3 Where is Mary? \tbathroom\t1
4 Daniel went back to the hallway.
5 Sandra moved to the garden.
6 Where is Daniel? \thallway\t4
1 Sandra travelled to the office.
2 Where is Sandra? \toffice\t1
"""

QA8 = """1 Mary moved to the bathroom.
2 Mary got the football there.
3 What is Mary carrying?\tfootball\t2
4 Mary took the milk there.
5 What is Mary carrying?\tfootball,milk\t2 4
6 Mary dropped the football.
7 Mary discarded the milk.
8 What is Mary carrying?\tnothing\t6 7
"""

QA19 = """1 The office is east of the hallway.
2 The kitchen is north of the office.
3 The garden is west of the bedroom.
4 The office is west of the garden.
5 The bathroom is north of the garden.
6 How do you go from the kitchen to the garden?\ts,e\t2 4
"""


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_reads_one_sample_per_question_with_facts_before_it(tmp_path):
    samples = read_babi(write(tmp_path, "qa1_single-supporting-fact_train.txt", QA1))
    assert len(samples) == 3
    first, second, third = samples
    assert first == BabiSample(
        "qa1",
        ("Mary moved to the bathroom.", "John went to the hallway."),
        "Where is Mary?",
        "bathroom",
        (0,),
    )
    # questions are not facts: line 4 is the third fact of the story
    assert second.facts[2:] == ("Daniel went back to the hallway.", "Sandra moved to the garden.")
    assert len(second.facts) == 4
    assert second.facts[second.supporting[0]] == "Daniel went back to the hallway."
    # numbering restarted: a new story without the old facts
    assert third.facts == ("Sandra travelled to the office.",)
    assert third.answer == "office"


def test_qa8_lists_and_qa19_paths(tmp_path):
    qa8 = read_babi(write(tmp_path, "qa8_lists-sets_test.txt", QA8))
    assert [s.answer for s in qa8] == ["football", "football,milk", "nothing"]
    assert [s.task for s in qa8] == ["qa8"] * 3
    second = qa8[1]
    assert [second.facts[i] for i in second.supporting] == [
        "Mary got the football there.",
        "Mary took the milk there.",
    ]
    assert len(qa8[2].facts) == 5 and qa8[2].supporting == (3, 4)

    qa19 = read_babi(write(tmp_path, "qa19_path-finding_train.txt", QA19))
    assert qa19[0].answer == "s,e"
    assert qa19[0].supporting == (1, 3)


def test_task_from_name_or_argument(tmp_path):
    assert task_from_filename("tasks_1-20_v1-2/en-10k/qa12_conjunction_train.txt") == "qa12"
    path = write(tmp_path, "stories.txt", QA1)
    assert read_babi(path, task="qa6")[0].task == "qa6"
    with pytest.raises(ValueError, match="task="):
        read_babi(path)


@pytest.mark.parametrize(
    ("text", "line", "needle"),
    [
        ("1 Mary moved to the bathroom.\nMary went home.\n", 2, "<number> <text>"),
        ("1 Mary moved to the bathroom.\n3 John went to the office.\n", 2, "follows 1"),
        ("1 Mary moved to the bathroom.\n2 Where is Mary?\tbathroom\n", 2, "tab-separated"),
        ("1 Mary moved to the bathroom.\n2 Where is Mary?\tbathroom\tone\n", 2, "numbers"),
        ("1 Mary moved to the bathroom.\n2 Where is Mary?\tbathroom\t5\n", 2, "not fact lines"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path, text, line, needle):
    path = write(tmp_path, "qa1_bad_train.txt", text)
    with pytest.raises(BabiFormatError, match=needle) as info:
        read_babi(path)
    assert f"qa1_bad_train.txt:{line}" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_missing_file_and_bad_supporting_index(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_babi(tmp_path / "qa1_missing_train.txt")
    with pytest.raises(ValueError, match="outside"):
        BabiSample("qa1", ("a.",), "q?", "x", (1,))

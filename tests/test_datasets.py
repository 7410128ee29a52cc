"""Dataset import: every supported format lands in the normalized parquet, bad input names file/row/column
and leaves the workspace and the store exactly as they were. Real files, a real SQLite store per test."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from llm_studio.data import (SAMPLE_NAME, dataset_dir, delete_dataset, detect_mapping, ensure_sample_dataset,
                             import_dataset, preview_file, read_records, read_split)
from llm_studio.data.ingest import MESSAGES_TYPE
from llm_studio.data.sample import SAMPLE_DIR, generate
from llm_studio.errors import DatasetError, NotFoundError
from llm_studio.store import Store

QA_CSV = "question,response\nWhat is 2 + 2?,4\nCapital of France?,Paris\n\"Say \"\"hi\"\", please\",hi\n"


@pytest.fixture(scope="session")
def migrated_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A freshly migrated, empty database, copied into each test's workspace (migrating costs ~0.5 s)."""
    path = tmp_path_factory.mktemp("template") / "llm_studio.db"
    Store(path).close()
    return path


@pytest.fixture
def store(workspace: Path, migrated_db: Path) -> Store:
    workspace.mkdir(parents=True, exist_ok=True)
    shutil.copy(migrated_db, workspace / "llm_studio.db")
    s = Store()
    yield s
    s.close()


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """Where tests write their input files (outside the workspace)."""
    folder = tmp_path / "files"
    folder.mkdir()
    return folder


def write(folder: Path, name: str, content: str | bytes | list | dict) -> Path:
    path = folder / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    elif name.endswith(".jsonl"):
        path.write_text("".join(json.dumps(item) + "\n" for item in content), encoding="utf-8")
    else:
        path.write_text(json.dumps(content), encoding="utf-8")
    return path


def tree(root: Path) -> list[str]:
    """Every file and folder under the workspace, with sizes of files (temp leftovers show up here)."""
    return sorted(f"{p.relative_to(root)}{'' if p.is_dir() else ':' + str(p.stat().st_size)}"
                  for p in root.rglob("*") if not p.name.startswith("llm_studio.db"))


# --- the shipped sample -----------------------------------------------------------------------------

def test_sample_dataset_imports_with_threads_as_multi_turn_conversations(store: Store, workspace: Path) -> None:
    record = ensure_sample_dataset(store)
    assert (record.name, record.format, record.n_train, record.n_valid) == (SAMPLE_NAME, "threads", 287, 50)
    assert ensure_sample_dataset(store).id == record.id  # idempotent
    assert [d.name for d in store.list_datasets()] == [SAMPLE_NAME]

    folder = dataset_dir(SAMPLE_NAME)
    assert folder == workspace / "datasets" / SAMPLE_NAME and record.path == str(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["data.parquet", "dataset.yaml", "validation.parquet"]
    for file in ("data.parquet", "validation.parquet"):
        schema = pq.read_schema(folder / file)
        assert schema.names == ["id", "messages"]
        assert schema.field("id").type == pa.string() and schema.field("messages").type == MESSAGES_TYPE

    records = {r["id"]: r["messages"] for r in read_records(SAMPLE_NAME)}
    assert len(records) == 287
    # Thread t01 branches after its first exchange: two conversations sharing it; t03 is a 3-exchange chain.
    assert [m["role"] for m in records["t01-2"]] == ["user", "assistant", "user", "assistant"]
    assert records["t01-2"][:2] == records["t01-2b"][:2] and "t01-1" not in records
    assert len(records["t03-3"]) == 6
    assert records["t02-2"][0] == {"role": "system", "content": generate.SYSTEM}
    turns = [sum(m["role"] == "assistant" for m in c) for c in records.values()]
    assert (turns.count(1), turns.count(2), turns.count(3)) == (270, 10, 7)

    valid = read_split(SAMPLE_NAME, "validation")
    assert len(valid) == 50 and all([m["role"] for m in c] == ["user", "assistant"] for c in valid)

    info = yaml.safe_load((folder / "dataset.yaml").read_text())
    assert info["counts"] == {"train": 287, "validation": 50, "source_rows": {"train": 309, "validation": 50}}
    stats = info["statistics"]["train"]
    assert stats["turns_per_conversation"]["counts"] == {"1": 270, "2": 10, "3": 7}
    assert set(stats["answer_chars"]) == {"min", "mean", "p50", "p90", "p99", "max"}
    hist = stats["length_histogram"]
    assert len(hist["edges"]) == len(hist["counts"]) + 1 and sum(hist["counts"]) == 287
    assert record.stats == info["statistics"]


def test_sample_files_are_regenerated_identically_and_validation_rephrases_train_facts(tmp_path: Path) -> None:
    generate.main(tmp_path)
    for name in ("train.csv", "validation.csv"):
        assert (tmp_path / name).read_bytes() == (SAMPLE_DIR / name).read_bytes()
    train, valid = generate.build()
    train_prompts = {r["prompt"] for r in train}
    train_answers = {r["answer"] for r in train}
    assert 300 <= len(train) <= 500 and 40 <= len(valid) <= 60
    for row in valid:
        assert row["prompt"] not in train_prompts and row["answer"] in train_answers
        assert 1 <= len(row["answer"].split()) <= 3


def test_read_split_registers_the_sample_on_first_use(store: Store) -> None:
    assert len(read_split(SAMPLE_NAME)) == 287
    assert store.get_dataset(SAMPLE_NAME).n_valid == 50


# --- foreign formats ----------------------------------------------------------------------------------

def test_plain_csv_with_question_and_response_columns(store: Store, files: Path) -> None:
    record = import_dataset(write(files, "qa.csv", QA_CSV), "qa", store=store)
    assert (record.format, record.columns) == ("prompt_answer", {"prompt": "question", "answer": "response"})
    assert read_split("qa") == [
        [{"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": "4"}],
        [{"role": "user", "content": "Capital of France?"}, {"role": "assistant", "content": "Paris"}],
        [{"role": "user", "content": 'Say "hi", please'}, {"role": "assistant", "content": "hi"}],
    ]
    assert [r["id"] for r in read_records("qa")] == ["row-2", "row-3", "row-4"]  # spreadsheet rows
    assert read_split("qa", "validation") == []  # the file exists, with 0 rows
    assert pq.read_table(dataset_dir("qa") / "validation.parquet").num_rows == 0


def test_csv_keeps_answers_like_na_as_text_and_accepts_semicolons_and_a_bom(store: Store, files: Path) -> None:
    path = write(files, "semi.csv", "\ufeffPrompt;Answer\nWhat is missing?;NA\n\nTrue or false?;None\n")
    record = import_dataset(path, "semi", store=store)
    assert record.columns == {"prompt": "Prompt", "answer": "Answer"}
    assert [r["id"] for r in read_records("semi")] == ["row-2", "row-4"]  # the blank row 3 is skipped
    assert [c[1]["content"] for c in read_split("semi")] == ["NA", "None"]


def test_alpaca_json_joins_instruction_and_input(store: Store, files: Path) -> None:
    path = write(files, "alpaca.json", [
        {"instruction": "Translate to French.", "input": "cat", "output": "chat"},
        {"instruction": "Name a primary color.", "input": "", "output": "red"},
        {"instruction": "Add one.", "input": None, "output": 3},
    ])
    record = import_dataset(path, "alpaca", store=store)
    assert record.format == "alpaca" and record.columns["input"] == "input"
    assert [[m["content"] for m in c] for c in read_split("alpaca")] == [
        ["Translate to French.\n\ncat", "chat"], ["Name a primary color.", "red"], ["Add one.", "3"]]


def test_sharegpt_json_becomes_multi_turn_conversations(store: Store, files: Path) -> None:
    path = write(files, "sharegpt.json", [
        {"id": "a", "conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "Hi"},
                                      {"from": "gpt", "value": "Hello"}, {"from": "human", "value": "2+2?"},
                                      {"from": "gpt", "value": "4"}]},
        {"id": "b", "conversations": [{"from": "human", "value": "Sky?"}, {"from": "gpt", "value": "blue"}]},
    ])
    record = import_dataset(path, "sharegpt", store=store)
    assert record.format == "sharegpt" and record.n_train == 2
    rows = read_records("sharegpt")
    assert [r["id"] for r in rows] == ["a", "b"]
    assert [m["role"] for m in rows[0]["messages"]] == ["system", "user", "assistant", "user", "assistant"]


def test_openai_chat_jsonl(store: Store, files: Path) -> None:
    lines = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}
             for i in range(10)]
    path = write(files, "chat.jsonl", lines)
    path.write_text(path.read_text() + "\n\n")  # trailing blank lines are fine
    record = import_dataset(path, "chat", validation_fraction=0.2)  # opens (and closes) its own Store
    assert (record.format, record.n_train, record.n_valid) == ("openai_messages", 8, 2)


def test_parquet_with_prompt_answer_and_system(store: Store, files: Path) -> None:
    path = files / "data.parquet"
    pq.write_table(pa.table({"Prompt": ["p1", "p2"], "Answer": ["a1", "a2"], "system_prompt": ["Be nice.", None],
                             "id": [10, 11]}), path)
    record = import_dataset(path, "pq", store=store)
    assert record.columns == {"prompt": "Prompt", "answer": "Answer", "system": "system_prompt", "id": "id"}
    rows = read_records("pq")
    assert [r["id"] for r in rows] == ["10", "11"]
    assert rows[0]["messages"][0] == {"role": "system", "content": "Be nice."} and len(rows[1]["messages"]) == 2


def test_parquet_with_a_nested_messages_column(store: Store, files: Path) -> None:
    path = files / "msgs.parquet"
    messages = [[{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]]
    pq.write_table(pa.table({"messages": pa.array(messages, MESSAGES_TYPE)}), path)
    assert import_dataset(path, "msgs", store=store).format == "openai_messages"
    assert read_split("msgs") == messages


def test_threads_give_one_conversation_per_leaf_in_any_row_order(store: Store, files: Path) -> None:
    path = write(files, "threads.csv", "id,parent_id,prompt,answer\n"
                 "c,b,third,3\nb,a,second,2\na,,first,1\nd,a,other second,2b\ne,,alone,x\n")
    record = import_dataset(path, "threads", mapping={"id": "id", "parent_id": "parent_id", "prompt": "prompt",
                                                      "answer": "answer"}, store=store)
    assert record.format == "threads"
    rows = {r["id"]: [m["content"] for m in r["messages"]] for r in read_records("threads")}
    assert rows == {"c": ["first", "1", "second", "2", "third", "3"], "d": ["first", "1", "other second", "2b"],
                    "e": ["alone", "x"]}


def test_mapping_overrides_detection(store: Store, files: Path) -> None:
    path = write(files, "odd.csv", "q,a,prompt\nquestion,answer,ignored\n")
    record = import_dataset(path, "odd", mapping={"prompt": "q", "answer": "a", "system": None}, store=store)
    assert record.columns == {"prompt": "q", "answer": "a"}
    assert read_split("odd")[0][0]["content"] == "question"


# --- validation splits --------------------------------------------------------------------------------

def test_validation_from_a_second_file(store: Store, files: Path) -> None:
    valid = write(files, "valid.csv", "question,response\nv1,w1\n")
    record = import_dataset(write(files, "qa.csv", QA_CSV), "qa", validation_path=valid, store=store)
    assert (record.n_train, record.n_valid) == (3, 1)
    assert read_split("qa", "validation") == [[{"role": "user", "content": "v1"},
                                                {"role": "assistant", "content": "w1"}]]


def test_validation_fraction_is_seeded_and_keeps_threads_whole(store: Store, files: Path) -> None:
    rows = [f"r{i},,q{i},a{i}" for i in range(40)] + ["t1,r0,follow,up", "t2,r0,other,up"]
    path = write(files, "many.csv", "id,parent_id,prompt,answer\n" + "\n".join(rows) + "\n")

    def split(name: str, seed: int) -> tuple[list[str], list[str]]:
        import_dataset(path, name, validation_fraction=0.25, seed=seed, store=store)
        return ([r["id"] for r in read_records(name)], [r["id"] for r in read_records(name, "validation")])

    first, again, other = split("s1", 7), split("s2", 7), split("s3", 8)
    assert first == again and first != other
    train, valid = first
    assert len(valid) in (10, 11) and len(train) + len(valid) == 41 and not set(train) & set(valid)
    assert ("t1" in valid) == ("t2" in valid)  # both continue thread r0: same side


# --- reading, preview, detection, delete -----------------------------------------------------------------

def test_detect_mapping_and_preview(files: Path) -> None:
    import pandas as pd
    assert detect_mapping(pd.DataFrame(columns=["Instruction", "input", "output"])) == {
        "prompt": "Instruction", "input": "input", "answer": "output"}
    assert detect_mapping(pd.DataFrame(columns=["id", "parent_id", "question", "completion", "system"])) == {
        "prompt": "question", "answer": "completion", "parent_id": "parent_id", "system": "system", "id": "id"}
    preview = preview_file(write(files, "qa.csv", QA_CSV), n=2)
    assert preview["format"] == "prompt_answer" and preview["n_conversations"] == 3 and preview["problem"] is None
    assert len(preview["conversations"]) == 2 and preview["sample_rows"][0] == {"question": "What is 2 + 2?",
                                                                                 "response": "4"}
    bad = preview_file(write(files, "bad.csv", "foo,bar\n1,2\n"))
    assert bad["format"] is None and bad["columns"] == ["foo", "bar"] and "found columns: foo, bar" in bad["problem"]


def test_unknown_dataset_and_delete(store: Store, files: Path, workspace: Path) -> None:
    with pytest.raises(NotFoundError):
        read_split("nope")
    import_dataset(write(files, "qa.csv", QA_CSV), "qa", store=store)
    delete_dataset("qa", store=store)
    assert store.list_datasets() == [] and tree(workspace) == ["datasets"]
    with pytest.raises(NotFoundError):
        delete_dataset("qa", store=store)


# --- bad input: DatasetError naming file, row, column; nothing written ----------------------------------

CHAT_LINE = '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}\n'
BAD_INPUTS = {
    # id: (file name, content, import kwargs, expected row, expected column, words in the message)
    "no-usable-columns": ("x.csv", "foo,bar\n1,2\n", {}, None, None, ["found columns: foo, bar"]),
    "mapped-column-missing": ("x.csv", QA_CSV, {"mapping": {"prompt": "question", "answer": "nope"}}, None, "nope",
                              ["found columns: question, response"]),
    "unknown-mapping-key": ("x.csv", QA_CSV, {"mapping": {"question": "question"}}, None, None, ["'question'"]),
    "mapping-incomplete": ("x.csv", QA_CSV, {"mapping": {"prompt": "question"}}, None, None, ["needs 'prompt' and"]),
    "empty-prompt": ("x.csv", "prompt,answer\na,b\n,c\n", {}, 3, "prompt", ["empty prompt", "spreadsheet row"]),
    "blank-answer-after-multiline": ("x.csv", 'prompt,answer\n"two\nlines",ok\n\nq,"   "\n', {}, 4, "answer",
                                     ["empty answer"]),
    "null-answer-json": ("x.json", [{"prompt": "a", "answer": "b"}, {"prompt": "c", "answer": None}], {}, 2,
                         "answer", ["empty answer", "position in the JSON array"]),
    "empty-answer-jsonl": ("x.jsonl", '{"prompt": "a", "answer": "b"}\n\n{"prompt": "c", "answer": ""}\n', {}, 3,
                           "answer", ["line number"]),
    "parent-points-nowhere": ("x.csv", "id,parent_id,prompt,answer\na,,p,q\nb,zz,p,q\n", {}, 3, "parent_id",
                              ["'zz' matches no id"]),
    "parent-cycle": ("x.csv", "id,parent_id,prompt,answer\nr,,p,q\na,b,p,q\nb,a,p,q\n", {}, 3, "parent_id",
                     ["cycle", "'a' -> 'b' -> 'a'"]),
    "self-parent": ("x.csv", "id,parent_id,prompt,answer\na,a,p,q\n", {}, 2, "parent_id", ["cycle"]),
    "duplicate-id": ("x.csv", "id,prompt,answer\na,p,q\nb,p,q\na,p,q\n", {}, 4, "id", ["duplicate id 'a'", "row 2"]),
    "not-utf8-csv": ("x.csv", b"prompt,answer\nhello,w\xe9rld\n", {}, 2, "answer", ["not UTF-8", "0xe9"]),
    "not-utf8-jsonl": ("x.jsonl", CHAT_LINE.encode() + b'{"prompt": "\xff", "answer": "a"}\n', {}, 2, "prompt",
                       ["not UTF-8"]),
    "empty-file": ("x.csv", "", {}, None, None, ["empty"]),
    "header-only": ("x.csv", "prompt,answer\n", {}, None, None, ["no data rows"]),
    "blank-lines-only": ("x.jsonl", "\n\n", {}, None, None, ["no data rows"]),
    "empty-json-array": ("x.json", [], {}, None, None, ["no data rows"]),
    "binary-junk-as-csv": ("x.csv", bytes(range(256)) * 4, {}, None, None, ["binary"]),
    "parquet-named-csv": ("x.csv", b"PAR1\x00\x00junk", {}, None, None, ["Parquet file", ".parquet"]),
    "json-named-csv": ("x.csv", '[{"prompt": "a", "answer": "b"}]', {}, None, None, ["looks like JSON"]),
    "csv-named-parquet": ("x.parquet", QA_CSV, {}, None, None, ["not a Parquet file"]),
    "invalid-json": ("x.json", '[{"prompt": "a", "answer": "b"},\n {"prompt": }]', {}, None, None,
                     ["invalid JSON at line 2"]),
    "json-object-not-array": ("x.json", {"prompt": "a"}, {}, None, None, ["array of objects"]),
    "invalid-jsonl-line": ("x.jsonl", CHAT_LINE + "{oops\n", {}, 2, None, ["invalid JSON"]),
    "malformed-csv": ("x.csv", "prompt,answer\na,b\nc,d,e\n", {}, 3, None, ["malformed CSV"]),
    "unclosed-quote-csv": ("x.csv", 'prompt,answer\na,b\n"c,d\n', {}, 3, None, ["never closed"]),
    "messages-wrong-order": ("x.jsonl", CHAT_LINE + '{"messages": [{"role": "assistant", "content": "a"}]}\n',
                             {}, 2, "messages", ["turn 1: expected system or user, found assistant"]),
    "messages-end-with-user": ("x.jsonl", '{"messages": [{"role": "user", "content": "q"}]}\n', {}, 1,
                               "messages", ["end with an assistant turn"]),
    "sharegpt-unknown-role": ("x.json", [{"conversations": [{"from": "tool", "value": "x"}]}], {}, 1,
                              "conversations", ["unsupported role 'tool'"]),
    "unsupported-extension": ("x.txt", QA_CSV, {}, None, None, ["unsupported file type '.txt'"]),
    "over-size-limit": ("x.csv", QA_CSV, {"max_bytes": 10}, None, None, ["upload limit"]),
    "fraction-too-big": ("x.csv", QA_CSV, {"validation_fraction": 0.95}, None, None, ["outside [0, 0.9]"]),
    "fraction-negative": ("x.csv", QA_CSV, {"validation_fraction": -0.1}, None, None, ["outside [0, 0.9]"]),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_names_file_row_and_column_and_writes_nothing(case: str, store: Store, files: Path,
                                                                 workspace: Path) -> None:
    import_dataset(write(files, "good.csv", QA_CSV), "existing", store=store)
    before, records = tree(workspace), store.list_datasets()
    file, content, kwargs, row, column, words = BAD_INPUTS[case]
    path = write(files, file, content)
    with pytest.raises(DatasetError) as raised:
        import_dataset(path, "new", store=store, **kwargs)
    error = raised.value
    if case.startswith("fraction"):
        assert error.file is None
    else:
        assert error.file == str(path) and str(path) in str(error)
    assert (error.row, error.column) == (row, column), str(error)
    for word in words:
        assert word in str(error)
    if row is not None:
        assert f"row {row}" in str(error)
    assert tree(workspace) == before and store.list_datasets() == records


@pytest.mark.parametrize("name", ["../evil", "a/b", "", ".hidden", "x" * 101])
def test_unsafe_dataset_name_is_refused(name: str, store: Store, files: Path, workspace: Path) -> None:
    before = tree(workspace)
    with pytest.raises(DatasetError, match="not allowed"):
        import_dataset(write(files, "qa.csv", QA_CSV), name, store=store)
    assert tree(workspace) == before and store.list_datasets() == []


def test_duplicate_name_is_refused_before_reading_the_file(store: Store, files: Path, workspace: Path) -> None:
    import_dataset(write(files, "qa.csv", QA_CSV), "qa", store=store)
    before = tree(workspace)
    with pytest.raises(DatasetError, match="already exists"):  # the file is junk: it was never read
        import_dataset(write(files, "junk.csv", b"\x00\x01"), "qa", store=store)
    assert tree(workspace) == before and len(store.list_datasets()) == 1


def test_missing_file_and_validation_file_problems(store: Store, files: Path, workspace: Path) -> None:
    good = write(files, "qa.csv", QA_CSV)
    with pytest.raises(DatasetError, match="file not found") as raised:
        import_dataset(files / "missing.csv", "m", store=store)
    assert raised.value.file == str(files / "missing.csv")
    lacking = write(files, "valid.csv", "prompt,answer\na,b\n")
    with pytest.raises(DatasetError, match="found columns: prompt, answer") as raised:
        import_dataset(good, "m", validation_path=lacking, mapping={"prompt": "question", "answer": "response"},
                       store=store)
    assert (raised.value.file, raised.value.column) == (str(lacking), "question")
    with pytest.raises(DatasetError, match="not both"):
        import_dataset(good, "m", validation_path=lacking, validation_fraction=0.1, store=store)
    assert tree(workspace) == [] and store.list_datasets() == []


def test_size_limit_from_the_environment(store: Store, files: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_STUDIO_MAX_UPLOAD_MB", "0.00001")  # about 10 bytes
    with pytest.raises(DatasetError, match="upload limit"):
        import_dataset(write(files, "qa.csv", QA_CSV), "qa", store=store)
    monkeypatch.setenv("LLM_STUDIO_MAX_UPLOAD_MB", "1")
    assert import_dataset(write(files, "qa.csv", QA_CSV), "qa", store=store).n_train == 3


class RacingStore(Store):
    """A real store where another import registers the same name just before ours inserts its row."""

    def add_dataset(self, name, *args, **kwargs):  # type: ignore[no-untyped-def]
        super().add_dataset(name, "/elsewhere", "prompt_answer", {}, 0, 0, {})
        return super().add_dataset(name, *args, **kwargs)


def test_failed_store_insert_removes_the_written_folder(store: Store, files: Path, workspace: Path) -> None:
    racing = RacingStore()
    before = tree(workspace)
    with pytest.raises(DatasetError, match="already exists"):
        import_dataset(write(files, "qa.csv", QA_CSV), "qa", store=racing)
    assert tree(workspace) == before  # no data folder, no temp folder
    assert [d.path for d in racing.list_datasets()] == ["/elsewhere"]  # only the other import's row
    racing.close()


def test_sample_folder_left_without_a_store_row_is_registered_again(store: Store, workspace: Path) -> None:
    record = ensure_sample_dataset(store)
    store.delete_dataset(SAMPLE_NAME)  # as if the database had been reset an hour later: the folder stays
    an_hour_ago = time.time() - 3600
    os.utime(dataset_dir(SAMPLE_NAME) / "dataset.yaml", (an_hour_ago, an_hour_ago))
    again = ensure_sample_dataset(store)
    assert (again.n_train, again.n_valid, again.stats) == (record.n_train, record.n_valid, record.stats)

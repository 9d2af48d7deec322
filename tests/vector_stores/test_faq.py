"""FAQ knowledge bases: import from CSV/XLSX/JSON, threshold match first, through the API and the
``file_search`` tool, with the packaged embedding model (multilingual-e5-small)."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import delete, func, select, update

from openapi_spec import validate, validate_error
from rixin.agents.tools.base import ToolCall, ToolContext
from rixin.agents.tools.file_search import FileSearchTool
from rixin.knowledge.faq import (
    DEFAULT_FAQ_THRESHOLD,
    FAQ_STRATEGY,
    FaqIndex,
    FaqIndexes,
    faq_chunks,
    hit_attributes,
    merge,
)
from rixin.knowledge.ingest import Ingestor
from rixin.knowledge.parsing import FaqEntry, ParseError, ParseLimits
from rixin.knowledge.parsing.faq import extract_faq
from rixin.knowledge.store_index import StoreIndexes
from rixin.schemas.vector_stores import VectorStoreSearchRequest, VectorStoreSearchResultsPage
from rixin.services.responses import _vector_store_tools
from rixin.store.blobs import BlobStore
from rixin.store.db import Database
from rixin.store.records import Base, ProjectRecord
from rixin.store.records_files import FileRecord
from rixin.store.records_vectors import FaqQuestionRecord, VectorStoreFileRecord, VectorStoreRecord
from vector_stores.support import Tenant, wait_idle
from vector_stores.test_store import context, fake_vectors

FAQ = {"rixin": {"format": "faq"}}

EN_CSV = """question,similar_questions,answer
How do I reset my password?,I forgot my password|password recovery,"Click 'Forgot password' on \
the sign-in page and follow the link in the email."
What are your opening hours?,When are you open?,"Monday to Friday, 9am to 6pm."
How can I close my account?,"cancel my account
terminate my account",Visit a branch with your ID card.
"""
ZH_ROWS = [
    ["标准问题", "相似问题", "答案"],
    ["如何重置登录密码？", "忘记密码怎么办；密码找回", "在登录页点“忘记密码”，用短信验证码重置。"],
    ["信用卡年费是多少？", "信用卡要交年费吗", "普卡首年免年费，刷卡满6次免次年年费。"],
    ["转账限额是多少？", "每天能转多少钱\n一天能转多少", "手机银行单日转账限额为50万元。"],
]  # fmt: skip
QA_JSON = {
    "qa_lst": [
        {
            "std_q": "如何开通手机银行？",
            "simi_qs": ["手机银行怎么开通", "怎样注册手机银行"],
            "answer": "下载App后用银行卡号和预留手机号注册即可。",
        },
        {
            "std_q": "How do I report a lost card?",
            "simi_qs": ["my card was stolen"],
            "answer": "Call 95588 at once to freeze the card.",
        },
    ]
}
DOC = (
    "Security policy. Passwords must be at least 12 characters long and are rotated every 90 "
    "days. The sign-in page locks an account after five failed attempts."
)
LIMITS = ParseLimits()


def xlsx(rows: list[list[str]]) -> bytes:
    import openpyxl

    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    for row in rows:
        sheet.append(row)
    buf = io.BytesIO()
    workbook.save(buf)
    return buf.getvalue()


def parse(data: bytes | str, suffix: str) -> list[FaqEntry]:
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return extract_faq(io.BytesIO(raw), suffix=suffix, limits=LIMITS)


# --- parsing (in-process; the server runs the same code in the sandboxed parser) ---------------


def test_csv_xlsx_and_json_shapes_parse_alike() -> None:
    en = parse(EN_CSV, "csv")
    assert [e.question for e in en] == [
        "How do I reset my password?",
        "What are your opening hours?",
        "How can I close my account?",
    ]
    assert en[0].similar == ("I forgot my password", "password recovery")
    assert en[2].similar == ("cancel my account", "terminate my account")
    assert en[1].answer == "Monday to Friday, 9am to 6pm."

    zh = parse(xlsx(ZH_ROWS), "xlsx")
    assert zh[0] == FaqEntry("如何重置登录密码？", ("忘记密码怎么办", "密码找回"), ZH_ROWS[1][2])
    assert zh[2].similar == ("每天能转多少钱", "一天能转多少")
    tsv = "\n".join("\t".join(c.replace("\n", "|") for c in row) for row in ZH_ROWS)
    assert parse(tsv, "tsv") == zh

    qa = parse(json.dumps(QA_JSON, ensure_ascii=False), "json")
    assert qa[0].questions == ("如何开通手机银行？", "手机银行怎么开通", "怎样注册手机银行")
    listed = [
        {"question": "Q1?", "similar_questions": "a | b；Q1?", "answer": 42},
        {"std_q": "Q2?", "answer": "yes", "extra": 1},
    ]
    assert parse(json.dumps(listed), "") == [
        FaqEntry("Q1?", ("a", "b"), "42"),
        FaqEntry("Q2?", (), "yes"),
    ]


@pytest.mark.parametrize(
    ("data", "suffix", "message"),
    [
        ("q,a\nx,y\n", "csv", "row 1: the header must name a 'question'"),
        ("question,answer\nHi?,Hello\nBye?,\n", "csv", "row 3: the answer is empty"),
        ("question,answer,答案\nHi?,a,b\n", "csv", "two columns name the answer"),
        ('{"qa_lst": [{"std_q": "a", "answer": "b"}, 7]}', "json", "qa_lst[1]: an entry must"),
        ('[{"std_q": "a"}]', "json", "entry [0]: the answer is missing or empty"),
        ('[{"std_q": "a", "simi_qs": [1], "answer": "b"}]', "json", "entry [0].simi_qs[0]"),
        ('{"faq": []}', "json", "a JSON FAQ is a list of entries"),
        ("question,answer\n", "csv", "no question-answer entries"),
        ("{not json", "json", "invalid JSON"),
    ],
)
def test_malformed_faq_names_row_and_field(data: str, suffix: str, message: str) -> None:
    with pytest.raises(ParseError) as info:
        parse(data, suffix)
    assert info.value.code == "invalid_faq"
    assert message in info.value.message


def test_xlsx_errors_name_the_sheet_row() -> None:
    rows = [["问题", "答案"], ["你好？", "你好"], ["再见？", ""]]
    with pytest.raises(ParseError, match=r"sheet 'Sheet' row 3: the answer is empty"):
        parse(xlsx(rows), "xlsx")


def test_pdf_is_not_a_faq_file() -> None:
    with pytest.raises(ParseError) as info:
        parse(b"%PDF-1.4 whatever", "pdf")
    assert info.value.code == "unsupported_file_type"


# --- matching (pure) ---------------------------------------------------------------------------


def test_match_merge_and_attributes() -> None:
    eye = np.eye(3, dtype=np.float32)
    index = FaqIndex(1, ["c1", "c1", "c2"], ["q", "q-sim", "r"], eye)
    query = np.array([[0.0, 0.96, 0.28]], dtype=np.float32)
    (match,) = index.match(query, 0.9)
    assert (match.chunk_id, match.question) == ("c1", "q-sim")
    assert match.similarity == pytest.approx(0.96)
    assert index.match(query, 0.9, allowed={"c2"}) == []
    assert [m.chunk_id for m in index.match(query, 0.2)] == ["c1", "c2"]

    found = index.match(query, 0.9)
    assert merge(found, [("c2", 0.9), ("c1", 0.8), ("c3", 0.5)], 2) == [("c1", 1.0), ("c2", 0.9)]
    attrs = hit_attributes({f"k{i}": i for i in range(16)}, found[0])
    assert len(attrs) == 16 and attrs["rixin_faq"] is True
    assert attrs["rixin_faq_question"] == "q-sim" and attrs["rixin_faq_similarity"] == 0.96

    chunks = faq_chunks([FaqEntry("A?", (), "a"), FaqEntry("B?", ("b?",), "bb")])
    assert [c.text for c in chunks] == ["Q: A?\nA: a", "Q: B?\nA: bb"]
    assert (chunks[1].char_start, chunks[1].ordinal) == (len(chunks[0].text) + 2, 1)


async def test_migration_matches_the_faq_records(db: Database) -> None:
    async with db.engine.connect() as conn:
        diff = await conn.run_sync(
            lambda c: compare_metadata(
                MigrationContext.configure(c, opts={"compare_type": True}), Base.metadata
            )
        )
    assert [d for d in diff if "faq" in str(d)] == []


async def test_faq_ingestion_stores_questions_and_cascades(db: Database, tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "files", db)
    async with db.session() as s:
        s.add(ProjectRecord(id="proj_f", name="f", created_at=1))
        blob = await blobs.put(s, EN_CSV.encode(), max_bytes=1 << 20)
        s.add(
            FileRecord(
                id="file-f", project_id="proj_f", filename="faq.csv", purpose="assistants",
                bytes=blob.bytes, sha256=blob.sha256, created_at=1,
            )
        )  # fmt: skip
        s.add(VectorStoreRecord(id="vs_f", project_id="proj_f", embedding_model="fake"))
        await s.flush()
        s.add(
            VectorStoreFileRecord(
                vector_store_id="vs_f", file_id="file-f", project_id="proj_f",
                chunking_strategy=dict(FAQ_STRATEGY), generation=1,
            )
        )  # fmt: skip

    async def embed(model: str, texts: Sequence[str]) -> np.ndarray[Any, Any]:
        return fake_vectors(texts)

    indexes = StoreIndexes(tmp_path / "index", db)
    ingest = Ingestor(db, blob_path=blobs.path, embed=embed, indexes=indexes)
    faqs = FaqIndexes(db)
    for attempt in (1, 2):  # a retry after a lost completion writes the same rows again
        async with db.session() as s:
            await s.execute(update(VectorStoreFileRecord).values(status="in_progress"))
        assert await ingest(context("proj_f", "vs_f", "file-f", attempt=attempt)) == {"chunks": 3}
        async with db.session(readonly=True) as s:
            version = await s.scalar(select(VectorStoreRecord.chunks_version))
        index = await faqs.open("vs_f", int(version or 0))
        assert index.size == 8  # 3 standard questions, 5 similar ones
        assert "terminate my account" in index.questions
        vector = fake_vectors(["When are you open?"])
        (match,) = index.match(vector, 0.999)
        assert match.question == "When are you open?"
    async with db.session() as s:
        await s.execute(delete(FileRecord).where(FileRecord.id == "file-f"))
    async with db.session(readonly=True) as s:
        assert await s.scalar(select(func.count()).select_from(FaqQuestionRecord)) == 0
    indexes.close()


# --- end to end --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kb(tenant_a: Tenant) -> dict[str, Any]:
    """A store with an English CSV FAQ, a Chinese XLSX FAQ, a JSON ``qa_lst`` and a document."""
    client = tenant_a.client
    store = client.vector_stores.create(name="faq").id
    en = tenant_a.upload("faq_en.csv", EN_CSV)
    zh = tenant_a.upload("faq_zh.xlsx", xlsx(ZH_ROWS))
    qa = tenant_a.upload("qa.json", json.dumps(QA_JSON, ensure_ascii=False))
    doc = tenant_a.upload("policy.txt", DOC)
    attached = client.vector_stores.files.create(
        vector_store_id=store, file_id=en, attributes={"lang": "en"}, extra_body=FAQ
    )
    body = attached.to_dict(mode="json")
    validate("VectorStoreFileObject", body)
    assert body["chunking_strategy"] == {"type": "other"}
    assert body["rixin"] == {"format": "faq", "progress": None}
    batch = client.vector_stores.file_batches.create(
        vector_store_id=store,
        files=[{"file_id": zh, "rixin": {"format": "faq"}}, {"file_id": doc}],
    )
    assert batch.file_counts.total == 2
    client.vector_stores.file_batches.create(vector_store_id=store, file_ids=[qa], extra_body=FAQ)
    state = wait_idle(client, store)
    assert state.file_counts.completed == 4, state.file_counts
    return {"store": store, "en": en, "zh": zh, "qa": qa, "doc": doc}


def search(tenant: Tenant, store: str, query: str | list[str], **body: Any) -> list[dict[str, Any]]:
    data = tenant.client.vector_stores.search(store, query=query, **body).to_dict(mode="json")
    validate("VectorStoreSearchResultsPage", data)
    return list(data["data"])


@pytest.mark.parametrize(
    ("query", "file", "answer"),
    [
        ("how to recover my password", "en", "Click 'Forgot password'"),
        ("what time do you open?", "en", "Monday to Friday"),
        ("忘了登录密码，怎么重新设置？", "zh", "短信验证码"),
        ("一天最多可以转账多少", "zh", "50万元"),
        ("手机银行如何开通", "qa", "预留手机号"),
        ("how to report my lost card", "qa", "95588"),
    ],
)
def test_paraphrase_hits_the_faq_first(
    tenant_a: Tenant, kb: dict[str, Any], query: str, file: str, answer: str
) -> None:
    top, *rest = search(tenant_a, kb["store"], query)
    assert top["file_id"] == kb[file]
    assert top["score"] == 1.0
    text = top["content"][0]["text"]
    assert text.startswith("Q: ") and "\nA: " in text and answer in text
    assert top["attributes"]["rixin_faq"] is True
    assert top["attributes"]["rixin_faq_similarity"] >= DEFAULT_FAQ_THRESHOLD
    assert top["attributes"]["rixin_faq_question"]
    if file == "en":
        assert top["attributes"]["lang"] == "en"  # the file's own attributes are kept
    assert all(not (r["attributes"] or {}).get("rixin_faq") or r["score"] == 1.0 for r in rest)


@pytest.mark.parametrize(
    "query",
    ["What is the capital of France?", "今天天气怎么样？", "How do I open a new savings account?"],
)
def test_unrelated_query_gets_no_faq_hit(tenant_a: Tenant, kb: dict[str, Any], query: str) -> None:
    hits = search(tenant_a, kb["store"], query)
    assert not any((h["attributes"] or {}).get("rixin_faq") for h in hits)


def test_threshold_update_changes_matching(tenant_a: Tenant, kb: dict[str, Any]) -> None:
    client, store = tenant_a.client, kb["store"]
    assert client.vector_stores.retrieve(store).to_dict()["rixin"]["faq_threshold"] == (
        DEFAULT_FAQ_THRESHOLD
    )
    query = "how to recover my password"
    try:
        strict = client.vector_stores.update(store, extra_body={"rixin": {"faq_threshold": 0.99}})
        body = strict.to_dict(mode="json")
        validate("VectorStoreObject", body)
        assert body["rixin"]["faq_threshold"] == 0.99
        hits = search(tenant_a, store, query)
        assert not any((h["attributes"] or {}).get("rixin_faq") for h in hits)
        # below the threshold the entry still competes as an ordinary chunk
        assert any("Forgot password" in h["content"][0]["text"] for h in hits)
    finally:
        reset = client.vector_stores.update(store, extra_body={"rixin": {"faq_threshold": None}})
    assert reset.to_dict()["rixin"]["faq_threshold"] == DEFAULT_FAQ_THRESHOLD
    assert search(tenant_a, store, query)[0]["attributes"]["rixin_faq"] is True

    loose = client.vector_stores.create(name="loose", extra_body={"rixin": {"faq_threshold": 0.5}})
    assert loose.to_dict()["rixin"]["faq_threshold"] == 0.5
    with pytest.raises(openai.BadRequestError) as info:
        client.vector_stores.update(store, extra_body={"rixin": {"faq_threshold": 1.5}})
    validate_error(info.value.response.json())


def test_filters_apply_to_faq_hits(tenant_a: Tenant, kb: dict[str, Any]) -> None:
    flt = {"type": "eq", "key": "lang", "value": "zh"}
    hits = search(tenant_a, kb["store"], "how to recover my password", filters=flt)
    assert all(h["file_id"] != kb["en"] for h in hits)


def test_malformed_faq_file_fails_with_last_error(tenant_a: Tenant, kb: dict[str, Any]) -> None:
    client = tenant_a.client
    bad = tenant_a.upload("bad.csv", "question,answer\nHi?,Hello\nBye?,\n")
    store = client.vector_stores.create(name="bad faq").id
    client.vector_stores.files.create(vector_store_id=store, file_id=bad, extra_body=FAQ)
    wait_idle(client, store)
    row = client.vector_stores.files.retrieve(file_id=bad, vector_store_id=store)
    validate("VectorStoreFileObject", row.to_dict(mode="json"))
    assert row.status == "failed" and row.last_error is not None
    assert row.last_error.code == "invalid_file"
    assert "row 3" in row.last_error.message and "answer" in row.last_error.message

    with pytest.raises(openai.BadRequestError) as info:
        client.vector_stores.files.create(
            vector_store_id=store,
            file_id=bad,
            chunking_strategy={
                "type": "static",
                "static": {"max_chunk_size_tokens": 200, "chunk_overlap_tokens": 0},
            },
            extra_body=FAQ,
        )
    validate_error(info.value.response.json())
    assert info.value.response.json()["error"]["param"] == "chunking_strategy"


class _HttpStores:
    """The vector store service as the ``file_search`` tool sees it, over the real server."""

    def __init__(self, tenant: Tenant) -> None:
        self.client = tenant.client

    async def search(
        self, project_id: str, store: str, req: VectorStoreSearchRequest
    ) -> VectorStoreSearchResultsPage:
        page = self.client.vector_stores.search(store, **req.known())
        return VectorStoreSearchResultsPage.model_validate(page.to_dict(mode="json"))


async def test_file_search_tool_returns_the_faq_answer_first(
    tenant_a: Tenant, kb: dict[str, Any]
) -> None:
    search_fn, _ = _vector_store_tools(_HttpStores(tenant_a))
    tool = FileSearchTool(
        name="file_search", type="file_search", search=search_fn, vector_store_ids=[kb["store"]]
    )
    call = ToolCall("call_1", "file_search", json.dumps({"query": "信用卡每年要收多少费用"}))
    output = await tool.run(call, ToolContext(tenant_a.project_id, "run_1", "run_1:call_1"))
    first = output.item["results"][0]
    assert first["file_id"] == kb["zh"] and first["attributes"]["rixin_faq"] is True
    assert output.text.startswith("[1] faq_zh.xlsx: Q: 信用卡年费是多少？\nA: 普卡首年免年费")

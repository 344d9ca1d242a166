"""The store: adapters, jobs, progress events and ratings, in SQL via SQLAlchemy.

SQLite by default (a file under the home); a Postgres URL works the same. The store
knows nothing of torch or of files on disk beyond the database itself. Each process
(app, job runner, training subprocess) opens its own :class:`Store`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    create_engine,
    event,
    select,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

ADAPTER_STATUSES = ("queued", "running", "done", "failed", "cancelled")
JOB_STATUSES = ("queued", "running", "done", "failed", "cancelled")
VERDICTS = ("success", "fail")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class AdapterRow(Base):
    __tablename__ = "adapters"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    base: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    goal: Mapped[str] = mapped_column(Text, default="")
    job_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    verdict: Mapped[str | None] = mapped_column(String(16), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    meta: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


class JobRow(Base):
    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16), default="train")
    adapter: Mapped[str] = mapped_column(String(64))
    sweep: Mapped[str | None] = mapped_column(String(64), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    request: Mapped[dict] = mapped_column(JSON, default=dict)
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    step: Mapped[int] = mapped_column(Integer, default=0)
    total_steps: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)


class EventRow(Base):
    __tablename__ = "job_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    kind: Mapped[str] = mapped_column(String(16), default="progress")
    step: Mapped[int] = mapped_column(Integer, default=0)
    total_steps: Mapped[int] = mapped_column(Integer, default=0)
    loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    eval_loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    tokens_per_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    eta_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)


class RatingRow(Base):
    __tablename__ = "ratings"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    comparison: Mapped[str] = mapped_column(String(64), index=True)
    model: Mapped[str] = mapped_column(String(64), index=True)  # adapter name or "base"
    prompt: Mapped[str] = mapped_column(Text)
    output: Mapped[str] = mapped_column(Text)
    score: Mapped[int] = mapped_column(Integer, default=0)  # +1 / -1 / 0
    best: Mapped[bool] = mapped_column(Boolean, default=False)
    blind: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class Store:
    """A handle on the database. Cheap to create; one per process."""

    def __init__(self, url: str):
        connect_args = {"timeout": 30, "check_same_thread": False} if url.startswith("sqlite") else {}
        self.engine = create_engine(url, connect_args=connect_args)
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        Base.metadata.create_all(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions() as session, session.begin():
            yield session

    def close(self) -> None:
        self.engine.dispose()

    # adapters -----------------------------------------------------------------
    def upsert_adapter(self, name: str, **fields: Any) -> AdapterRow:
        with self.session() as s:
            row = s.get(AdapterRow, name)
            if row is None:
                row = AdapterRow(name=name, **{"meta": {}, **fields})
                s.add(row)
            else:
                for key, value in fields.items():
                    setattr(row, key, value)
            s.flush()
            return row

    def get_adapter(self, name: str) -> AdapterRow | None:
        with self.session() as s:
            return s.get(AdapterRow, name)

    def list_adapters(self, status: str | None = None) -> list[AdapterRow]:
        with self.session() as s:
            query = select(AdapterRow).order_by(AdapterRow.created_at, AdapterRow.name)
            if status:
                query = query.where(AdapterRow.status == status)
            return list(s.scalars(query))

    def delete_adapter(self, name: str) -> bool:
        with self.session() as s:
            row = s.get(AdapterRow, name)
            if row is None:
                return False
            s.delete(row)
            return True

    # jobs -----------------------------------------------------------------------
    def add_job(self, adapter: str, request: dict, sweep: str | None = None, kind: str = "train") -> JobRow:
        with self.session() as s:
            row = JobRow(adapter=adapter, request=request, sweep=sweep, kind=kind, status="queued")
            s.add(row)
            s.flush()
            return row

    def get_job(self, job_id: int) -> JobRow | None:
        with self.session() as s:
            return s.get(JobRow, job_id)

    def list_jobs(self, statuses: tuple[str, ...] | None = None) -> list[JobRow]:
        with self.session() as s:
            query = select(JobRow).order_by(JobRow.id)
            if statuses:
                query = query.where(JobRow.status.in_(statuses))
            return list(s.scalars(query))

    def update_job(self, job_id: int, **fields: Any) -> JobRow:
        with self.session() as s:
            row = s.get(JobRow, job_id)
            if row is None:
                raise KeyError(job_id)
            for key, value in fields.items():
                setattr(row, key, value)
            s.flush()
            return row

    def claim_next_job(self) -> JobRow | None:
        """Atomically move the oldest queued job to running and return it."""
        with self.session() as s:
            row = s.scalars(
                select(JobRow).where(JobRow.status == "queued").order_by(JobRow.id).limit(1)
            ).first()
            if row is None:
                return None
            row.status = "running"
            row.started_at = row.started_at or utcnow()
            row.attempts += 1
            s.flush()
            return row

    def add_event(self, job_id: int, **fields: Any) -> None:
        with self.session() as s:
            s.add(EventRow(job_id=job_id, **fields))
            job = s.get(JobRow, job_id)
            if job is not None and fields.get("step") is not None and fields.get("kind", "progress") == "progress":
                job.step = fields["step"]
                job.total_steps = fields.get("total_steps") or job.total_steps

    def events(self, job_id: int, after_id: int = 0) -> list[EventRow]:
        with self.session() as s:
            query = (
                select(EventRow)
                .where(EventRow.job_id == job_id, EventRow.id > after_id)
                .order_by(EventRow.id)
            )
            return list(s.scalars(query))

    # ratings ----------------------------------------------------------------------
    def add_rating(self, **fields: Any) -> RatingRow:
        with self.session() as s:
            row = RatingRow(**fields)
            s.add(row)
            s.flush()
            return row

    def ratings(self, model: str | None = None, comparison: str | None = None) -> list[RatingRow]:
        with self.session() as s:
            query = select(RatingRow).order_by(RatingRow.id)
            if model:
                query = query.where(RatingRow.model == model)
            if comparison:
                query = query.where(RatingRow.comparison == comparison)
            return list(s.scalars(query))


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()

"""Pseudonymisation and quasi-identifiers (docs/privacy.md): the keyed hash, its key, what the
store records about it, an end-to-end run (ingest, train, serve) after which no raw user id
is in the store file, the model directory, the logs or /metrics, and coarsening with its
k-anonymity report. Every fixture is built here; nothing depends on a dataset's name."""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from kinrec.cli import app as cli
from kinrec.config import (
    DataConfig,
    ModelSection,
    PipelineConfig,
    PrivacyConfig,
    SplitConfig,
    StoreConfig,
)
from kinrec.data.dataset import Dataset
from kinrec.data.errors import DataError
from kinrec.data.loaders import load_recbole_atomic
from kinrec.pipeline import train_and_evaluate
from kinrec.privacy import (
    KEY_ENV,
    PseudonymError,
    Pseudonymiser,
    k_anonymity,
    load_pseudonymiser,
    parse_rule,
    protect_user_attributes,
    serving_pseudonymiser,
)
from kinrec.serving.app import JsonFormatter, create_app
from kinrec.serving.config import ServingConfig
from kinrec.store import Store

KEY = "9f3c1a7be2d84f6a0c5e7b9d1f2a4c6e8b0d2f4a6c8e0b2d4f6a8c0e2b4d6f8a"
OTHER_KEY = "0a1b2c3d4e5f60718293a4b5c6d7e8f9fedcba9876543210aabbccddeeff0011"
NAME = "shopfront"
N_USERS = 24
RAW_IDS = [f"rawuser-{u:03d}-zq" for u in range(N_USERS)]
NEW_RAW = "walkin-customer-77-zq"  # a user the model was not trained on
runner = CliRunner()


# ---------------------------------------------------------------------------------- fixtures
def write_atomic(folder: Path, users: list[tuple] | None = None) -> Path:
    """RecBole atomic files NAME.inter and NAME.user: even users like items it01-it10, odd
    users it11-it20; user attributes in the ml-100k users file's shape."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    for u, raw in enumerate(RAW_IDS):
        base = 1 if u % 2 == 0 else 11
        for j in range(8):
            item = base + (u + j) % 10
            lines.append(f"{raw}\tit{item:02d}\t{1 + j % 5}\t{1000 + u * 10 + j}")
    (folder / f"{NAME}.inter").write_text("\n".join(lines) + "\n", encoding="utf-8")
    if users is None:
        users = [
            (raw, str(18 + u * 2), "MF"[u % 2], "engineer", f"{85700 + u}")
            for u, raw in enumerate(RAW_IDS)
        ]
    header = "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token"
    rows = ["\t".join(r) for r in users]
    (folder / f"{NAME}.user").write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return folder


def small_dataset(users: list[str]) -> Dataset:
    inter = pd.DataFrame(
        {
            "user_id": pd.Series([u for u in users for _ in range(2)], dtype=object),
            "item_id": pd.Series(["a", "b"] * len(users), dtype=object),
        }
    )
    return Dataset(name="tiny", interactions=inter)


def scan(blobs: dict[str, bytes], needles: list[str]) -> list[str]:
    """``where: id`` for each raw id found in any blob."""
    return [
        f"{where}: {needle}"
        for where, data in blobs.items()
        for needle in needles
        if needle.encode("utf-8") in data
    ]


def files_under(root: Path, pattern: str = "**/*") -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in root.glob(pattern) if p.is_file()}


# ------------------------------------------------------------------------------- the hash
def test_the_pseudonym_is_keyed_stable_and_url_safe() -> None:
    one, again, other = Pseudonymiser(KEY.encode()), Pseudonymiser(KEY.encode()), None
    other = Pseudonymiser(OTHER_KEY.encode())
    assert one("196") == again("196")  # stable across instances (and processes: no salt)
    assert one("196") != other("196")  # keyed
    assert one("196") != one("197")
    assert re.fullmatch(r"p_[a-z2-7]{26}", one("196"))  # 130 bits, URL-safe
    assert len({one(str(i)) for i in range(20_000)}) == 20_000
    # the key is in neither the repr nor the fingerprint
    assert KEY not in repr(one) and KEY not in one.fingerprint
    assert one.fingerprint == again.fingerprint != other.fingerprint


def test_keys_come_from_a_file_or_the_environment_and_weak_ones_are_refused(
    tmp_path: Path,
) -> None:
    with pytest.raises(PseudonymError, match=f"{KEY_ENV}.*--pseudonym-key-file"):
        load_pseudonymiser(None, env={})
    with pytest.raises(PseudonymError, match="12 characters, at least 32"):
        load_pseudonymiser(None, env={KEY_ENV: "short-secret"})
    with pytest.raises(PseudonymError, match=f"{KEY_ENV}: the pseudonym key is too repetitive"):
        load_pseudonymiser(None, env={KEY_ENV: "ab" * 40})
    key_file = tmp_path / "pseudonym.key"
    key_file.write_text(KEY + "\n", encoding="utf-8")  # the final newline is not key
    from_file = load_pseudonymiser(key_file, env={KEY_ENV: OTHER_KEY})  # the file wins
    assert from_file("x") == Pseudonymiser(KEY.encode())("x")
    assert from_file.source == str(key_file)
    with pytest.raises(PseudonymError, match="no such pseudonym key file"):
        load_pseudonymiser(tmp_path / "missing.key")


def test_a_store_never_mixes_raw_and_pseudonymous_ids_or_two_keys(tmp_path: Path) -> None:
    p = Pseudonymiser(KEY.encode())
    with Store(f"sqlite:///{tmp_path / 'p.db'}") as store:
        store.ingest(small_dataset(["ann", "bob"]), pseudonymiser=p)
        assert set(store.interactions_frame("tiny")["user_id"]) == {p("ann"), p("bob")}
        store.ingest(small_dataset(["ann", "bob"]), pseudonymiser=p)  # idempotent
        with pytest.raises(PseudonymError, match="holds pseudonymised user ids"):
            store.ingest(small_dataset(["cid"]))
        with pytest.raises(PseudonymError, match="another key"):
            store.ingest(small_dataset(["cid"]), pseudonymiser=Pseudonymiser(OTHER_KEY.encode()))
        assert len(store.interactions_frame("tiny")) == 4  # nothing of the refused ingests
        assert serving_pseudonymiser(store, env={KEY_ENV: KEY}) is not None
        with pytest.raises(PseudonymError, match=r"is pseudonymised: .*KINREC_PSEUDONYM_KEY"):
            serving_pseudonymiser(store, env={})
        with pytest.raises(PseudonymError, match="another key"):
            serving_pseudonymiser(store, env={KEY_ENV: OTHER_KEY})
        meta = dict(store.engine.connect().exec_driver_sql("SELECT * FROM kinrec_meta").all())
        assert meta["pseudonym_key_check"] == p.fingerprint
        assert KEY not in json.dumps(meta)
    with Store(f"sqlite:///{tmp_path / 'raw.db'}") as store:
        store.ingest(small_dataset(["ann"]))
        with pytest.raises(PseudonymError, match="without pseudonymisation \\(tiny\\)"):
            store.ingest(small_dataset(["bob"]), pseudonymiser=p)
        assert serving_pseudonymiser(store, env={KEY_ENV: KEY}) is None


# ---------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """Ingest (CLI, --pseudonymise, [privacy] rules from a config) and train EASE."""
    root = tmp_path_factory.mktemp("pseudonyms")
    source = write_atomic(root / "source")
    db = root / "store.db"
    url = f"sqlite:///{db}"
    config = root / "privacy.toml"
    config.write_text(
        '[privacy]\ncoarsen = { zip_code = "prefix:3", age = "bucket:10" }\n'
        'drop = ["occupation"]\n',
        encoding="utf-8",
    )
    result = runner.invoke(
        cli,
        ["ingest", str(source), "--db", url, "--pseudonymise", "--config", str(config)],
        env={KEY_ENV: KEY},
    )
    assert result.exit_code == 0, result.output
    pipeline = PipelineConfig(
        data=DataConfig(dataset=NAME),
        store=StoreConfig(url=url),
        split=SplitConfig(method="random", seed=1),
        model=ModelSection(name="ease"),
    )
    with Store(url) as store:
        dataset = store.load_dataset(NAME)
    model_dir = root / "model"
    train_and_evaluate(pipeline, dataset, model_dir)
    return {"root": root, "db": db, "url": url, "model_dir": model_dir, "source": source}


def test_ingest_stores_pseudonyms_and_coarsened_attributes(world: dict) -> None:
    p = Pseudonymiser(KEY.encode())
    with Store(world["url"]) as store:
        data = store.load_dataset(NAME)
    assert set(data.interactions["user_id"]) == {p(u) for u in RAW_IDS}
    users = data.users.set_index("user_id")
    assert data.user_attribute_fields == ["age", "gender", "zip_code"]  # occupation dropped
    first = users.loc[p(RAW_IDS[0])]  # age 18, zip 85700
    assert (first["age"], first["zip_code"]) == ("10-19", "857")
    assert users.loc[p(RAW_IDS[7]), "age"] == "30-39"  # 18 + 14 = 32


def test_no_raw_user_id_in_store_model_logs_or_metrics(
    world: dict, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    p = Pseudonymiser(KEY.encode())
    monkeypatch.setenv(KEY_ENV, KEY)
    caplog.set_level(logging.DEBUG)
    config = ServingConfig(model_dir=world["model_dir"], db=world["url"], insecure_no_auth=True)
    trained, erased = RAW_IDS[0], RAW_IDS[3]
    with TestClient(create_app(config)) as client:
        deadline = time.time() + 60
        while client.get("/readyz").status_code != 200:
            assert time.time() < deadline, "the engine did not load"
            time.sleep(0.05)
        # a trained user, addressed by the client's own id, is known with their history
        history = client.get(f"/v1/users/{trained}/history").json()
        assert history["known"] and history["n_trained_items"] > 0
        assert history["user_id"] == p(trained)  # responses name users by pseudonym
        recs = client.get(f"/v1/users/{trained}/recommendations", params={"k": 5}).json()
        assert recs["user_id"] == p(trained) and len(recs["items"]) == 5
        item = recs["items"][0]["item_id"]
        events = [
            {"user_id": NEW_RAW, "item_id": "it03", "type": "click"},
            {"user_id": trained, "item_id": item, "type": "like"},
            {"user_id": erased, "item_id": "it12", "type": "view"},
        ]
        posted = client.post("/v1/events", json={"events": events})
        assert posted.status_code == 201, posted.text
        single = client.post(
            "/v1/events", json={"user_id": NEW_RAW, "item_id": "it04", "type": "view"}
        )
        assert single.status_code == 201
        after = client.get(f"/v1/users/{NEW_RAW}/history").json()
        assert after["known"] and {e["item_id"] for e in after["events"]} == {"it03", "it04"}
        assert client.get(f"/v1/users/{NEW_RAW}/recommendations").status_code == 200
        why = client.get(f"/v1/users/{trained}/recommendations/{item}/explanation")
        assert why.status_code == 200
        listed = client.get("/v1/users").json()["users"]
        assert p(NEW_RAW) in listed and NEW_RAW not in listed
        gone = client.delete(f"/v1/users/{erased}")
        assert gone.status_code == 200 and gone.json()["user_id"] == p(erased)
        assert gone.json()["deleted"]["interactions"] > 0
        assert not client.get(f"/v1/users/{erased}/history").json()["known"]
        bad = client.get("/v1/users/%20/recommendations")  # blank: refused, as without keys
        assert bad.status_code == 422 and "user_id" in bad.json()["error"]
        metrics = client.get("/metrics").text
    with Store(world["url"]) as store:
        assert p(NEW_RAW) in {e.user_id for e in store.events_for_user(NAME, p(NEW_RAW))}

    raw = [*RAW_IDS, NEW_RAW]
    # the service's own log lines (the test client's httpx logger is the client's side)
    served = [r for r in caplog.records if r.name.split(".")[0] in ("kinrec", "uvicorn")]
    logs = "\n".join(JsonFormatter().format(r) for r in served)
    assert "request" in logs and p(trained) in logs  # the access log ran, with pseudonyms
    store_files = files_under(world["db"].parent, world["db"].name + "*")
    assert p(NEW_RAW).encode() in b"".join(store_files.values())  # the scan sees ids
    found = scan(
        {
            **store_files,
            **files_under(world["model_dir"]),
            "logs": logs.encode(),
            "metrics": metrics.encode(),
        },
        raw,
    )
    assert found == []


def test_the_scan_finds_raw_ids_in_a_store_that_is_not_pseudonymised(tmp_path: Path) -> None:
    source = write_atomic(tmp_path / "source")
    result = runner.invoke(cli, ["ingest", str(source), "--db", f"sqlite:///{tmp_path / 'r.db'}"])
    assert result.exit_code == 0, result.output
    assert len(scan(files_under(tmp_path, "r.db*"), RAW_IDS)) == N_USERS


def test_a_service_without_the_right_key_does_not_start(
    world: dict, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = ServingConfig(model_dir=world["model_dir"], db=world["url"], insecure_no_auth=True)
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(PseudonymError, match=f"is pseudonymised: .*{KEY_ENV}"):
        create_app(config)
    monkeypatch.setenv(KEY_ENV, OTHER_KEY)
    with pytest.raises(PseudonymError, match="another key"):
        create_app(config)
    key_file = tmp_path / "k"
    key_file.write_text(KEY, encoding="utf-8")  # the file wins over the wrong environment
    app = create_app(config.model_copy(update={"pseudonym_key_file": key_file}))
    assert app.state.pseudonyms is not None


def test_ingest_without_the_key_or_with_a_raw_ingest_is_refused(world: dict) -> None:
    url = world["url"]
    missing = runner.invoke(
        cli, ["ingest", str(world["source"]), "--db", url, "--pseudonymise"], env={KEY_ENV: ""}
    )
    assert missing.exit_code == 2 and KEY_ENV in missing.output
    raw = runner.invoke(cli, ["ingest", str(world["source"]), "--db", url])
    assert raw.exit_code == 2 and "holds pseudonymised user ids" in raw.output


# ------------------------------------------------------------------------ quasi-identifiers
GROUPED_USERS = [
    # (id, age, gender, occupation, zip): after zip prefix:3 and age bucket:10 and dropping
    # occupation, the groups (age, gender, zip) hold 5, 4 and 3 users
    *[(f"u{i}", str(30 + i), "F", f"job{i}", f"1234{i}") for i in range(5)],
    *[(f"v{i}", str(40 + i), "M", f"job{i}", f"5678{i}") for i in range(4)],
    *[(f"w{i}", str(20 + i), "F", f"job{i}", f"1239{i}") for i in range(3)],
]


def test_coarsening_and_the_k_anonymity_report(tmp_path: Path) -> None:
    source = write_atomic(tmp_path / "source", users=GROUPED_USERS)
    config = tmp_path / "privacy.toml"
    config.write_text(
        '[privacy]\ncoarsen = { zip_code = "prefix:3", age = "bucket:10" }\n'
        'drop = ["occupation"]\nk = 5\n',
        encoding="utf-8",
    )
    url = f"sqlite:///{tmp_path / 'q.db'}"
    ingested = runner.invoke(cli, ["ingest", str(source), "--db", url, "--config", str(config)])
    assert ingested.exit_code == 0, ingested.output
    result = runner.invoke(cli, ["privacy", "report", str(source), "--db", url, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["source"]["k"] == 1 and report["source"]["users_below_threshold"] == 12
    assert report["source"]["columns"] == ["age", "gender", "occupation", "zip_code"]
    after = report["store"]
    assert (after["users"], after["groups"], after["k"]) == (12, 3, 3)
    assert after["users_below_threshold"] == 7  # the groups of 4 and 3
    assert after["columns"] == ["age", "gender", "zip_code"]
    table = runner.invoke(cli, ["privacy", "report", "--db", url, "-k", "4"])
    assert table.exit_code == 0 and "store (after)" in table.stdout


def test_k_anonymity_counts_missing_values_as_a_value() -> None:
    users = pd.DataFrame({"user_id": list("abcd"), "zip": ["1", "1", None, None]})
    report = k_anonymity(users, ["zip"], threshold=3)
    assert (report.groups, report.smallest, report.below) == (2, 2, 4)
    assert k_anonymity(users, [], 3).smallest == 4
    assert k_anonymity(users.iloc[:0], ["zip"], 3).smallest == 0


def test_rules_and_their_errors_name_the_field_file_and_line(tmp_path: Path) -> None:
    assert parse_rule("bucket:10").apply("37") == "30-39"
    assert parse_rule("bucket:2.5").apply("6") == "[5,7.5)"
    assert parse_rule("prefix:3").apply("85711") == "857"
    with pytest.raises(ValueError, match=r"privacy\.coarsen\.zip: unknown rule 'first:3'"):
        PrivacyConfig(coarsen={"zip": "first:3"})
    with pytest.raises(ValueError, match="both in coarsen and in drop"):
        PrivacyConfig(coarsen={"zip": "prefix:3"}, drop=["zip"])
    users = [*GROUPED_USERS[:2], ("x9", "unknown", "F", "job", "99999")]
    source = write_atomic(tmp_path / "source", users=users)
    dataset = load_recbole_atomic(source, NAME)
    with pytest.raises(DataError, match=r"shopfront\.user:4: field 'age': bucket:10 needs a num"):
        protect_user_attributes(dataset, {"age": "bucket:10"}, [])
    with pytest.raises(
        DataError,
        match=r"shopfront\.user: field 'zip': privacy\.coarsen names 'zip', which is not a user",
    ):
        protect_user_attributes(dataset, {"zip": "prefix:3"}, [])

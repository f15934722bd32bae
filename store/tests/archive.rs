//! The log's archive: exported from one PostgreSQL store, imported into another, and the files
//! an import refuses without writing anything. Also the operator's filtered reads of the log.

use std::io::{Read, Write};

use atelier_store::archive::{self, ArchiveError};
use atelier_store::postgres::{LogQuery, PgConfig, PgEventStore};
use atelier_store::testing::TestDatabase;
use atelier_store::{
    EventData, EventStore, ExpectedRevision, Position, ReadStream, RecordedEvent, StoreError,
    StreamMetadata, StreamName,
};
use chrono::{DateTime, Utc};
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use serde_json::json;

async fn store(db: &TestDatabase) -> PgEventStore {
    PgEventStore::with_pool(db.pool(4).await.unwrap(), PgConfig::new(&db.url))
}

fn name(s: &str) -> StreamName {
    StreamName::new(s).unwrap()
}

fn event(ty: &str, n: u32, actor: &str) -> EventData {
    EventData::new(ty, json!({ "n": n, "text": format!("{ty} number {n}") })).with_metadata(json!({
        "org_id": "0190a1b2-0000-7000-8000-000000000001",
        "actor": actor,
        "correlation_id": format!("corr-{n}"),
        "schema": 1,
    }))
}

/// A log of several streams, interleaved: one with retention settings, a soft-deleted one, a
/// tombstoned one, one that only has metadata, a batch of several events.
async fn fill(s: &PgEventStore) {
    let any = ExpectedRevision::Any;
    s.append(
        &name("project-a"),
        any,
        vec![event("ProjectCreated", 0, "alice")],
    )
    .await
    .unwrap();
    s.append(
        &name("build-b"),
        any,
        vec![
            event("BuildQueued", 1, "bob"),
            event("BuildStarted", 2, "bob"),
        ],
    )
    .await
    .unwrap();
    s.append(
        &name("order-c"),
        any,
        vec![event("OrderPlaced", 3, "carol")],
    )
    .await
    .unwrap();
    s.append(
        &name("project-a"),
        any,
        vec![event("ProjectRenamed", 4, "alice")],
    )
    .await
    .unwrap();
    s.append(&name("order-c"), any, vec![event("OrderPaid", 5, "carol")])
        .await
        .unwrap();
    s.append(&name("gone-d"), any, vec![event("Doomed", 6, "dave")])
        .await
        .unwrap();
    s.append(
        &name("project-a"),
        any,
        vec![event("ProjectUpdated", 7, "alice")],
    )
    .await
    .unwrap();
    s.set_stream_metadata(
        &name("project-a"),
        StreamMetadata {
            max_age: Some(86_400 * 365 * 100),
            max_count: Some(10),
            truncate_before: None,
        },
    )
    .await
    .unwrap();
    s.set_stream_metadata(
        &name("settings-e"),
        StreamMetadata {
            max_age: None,
            max_count: Some(3),
            truncate_before: None,
        },
    )
    .await
    .unwrap();
    s.delete_stream(&name("order-c"), ExpectedRevision::Exact(1))
        .await
        .unwrap();
    s.tombstone_stream(&name("gone-d"), any).await.unwrap();
    s.append(
        &name("build-b"),
        any,
        vec![event("BuildSucceeded", 8, "bob")],
    )
    .await
    .unwrap();
}

/// Every event committed (not `read_all`: that stops below any transaction open on the server,
/// such as another test's import).
async fn all_events(s: &PgEventStore) -> Vec<RecordedEvent> {
    s.query_log(&LogQuery::default(), Position::START, None, 10_000)
        .await
        .unwrap()
}

type StreamState = (
    String,
    i64,
    bool,
    bool,
    Option<i64>,
    Option<i64>,
    Option<i64>,
);

async fn stream_states(s: &PgEventStore) -> Vec<StreamState> {
    sqlx::query_as(
        "SELECT stream_name, revision, deleted, tombstoned, max_age, max_count, truncate_before \
         FROM event_streams ORDER BY stream_name",
    )
    .fetch_all(s.pool())
    .await
    .unwrap()
}

/// The archive of a filled store, as bytes.
async fn exported() -> Vec<u8> {
    let db = TestDatabase::create().await.unwrap();
    let s = store(&db).await;
    fill(&s).await;
    let (bytes, trailer) = s.export_archive(Vec::new(), &mut |_, _| {}).await.unwrap();
    assert_eq!(trailer.events, 9);
    assert_eq!(trailer.streams, 5);
    bytes
}

#[tokio::test]
async fn an_exported_log_imports_into_a_fresh_database_with_its_events_order_and_streams() {
    let source_db = TestDatabase::create().await.unwrap();
    let source = store(&source_db).await;
    fill(&source).await;
    // Through a file, as the CLI does.
    let file = tempfile::NamedTempFile::new().unwrap();
    let mut seen = (0, 0);
    let (out, trailer) = source
        .export_archive(
            std::fs::File::create(file.path()).unwrap(),
            &mut |done, total| seen = (done, total),
        )
        .await
        .unwrap();
    drop(out);
    assert_eq!(seen, (9, 9));
    let summary = archive::verify(std::fs::File::open(file.path()).unwrap()).unwrap();
    assert_eq!(summary.trailer, trailer);

    let target_db = TestDatabase::create().await.unwrap();
    let target = store(&target_db).await;
    let mut written = 0;
    target
        .import_archive(std::fs::File::open(file.path()).unwrap(), &mut |n| {
            written = n
        })
        .await
        .unwrap();
    assert_eq!(written, 9);

    let before = all_events(&source).await;
    let after = all_events(&target).await;
    assert_eq!(before.len(), 9);
    let strip = |events: &[RecordedEvent]| -> Vec<_> {
        events
            .iter()
            .map(|e| {
                (
                    e.event_id,
                    e.event_type.clone(),
                    e.data.clone(),
                    e.metadata.clone(),
                    e.stream.clone(),
                    e.revision,
                    e.created,
                )
            })
            .collect()
    };
    assert_eq!(strip(&after), strip(&before));
    assert!(
        after.windows(2).all(|w| w[0].position < w[1].position),
        "positions are new but in the same order"
    );
    assert_eq!(stream_states(&target).await, stream_states(&source).await);
    assert_eq!(
        target.stream_metadata(&name("project-a")).await.unwrap(),
        source.stream_metadata(&name("project-a")).await.unwrap()
    );

    // The streams behave as they did: a tombstoned stream refuses writes, a soft-deleted one
    // reads empty and continues its revisions, the others continue theirs.
    let refused = target
        .append(
            &name("gone-d"),
            ExpectedRevision::Any,
            vec![event("Again", 9, "x")],
        )
        .await;
    assert!(
        matches!(refused, Err(StoreError::StreamDeleted { .. })),
        "{refused:?}"
    );
    assert!(
        target
            .read_stream(&name("order-c"), ReadStream::forward())
            .await
            .unwrap()
            .is_empty()
    );
    let r = target
        .append(
            &name("order-c"),
            ExpectedRevision::NoStream,
            vec![event("OrderPlaced", 10, "carol")],
        )
        .await
        .unwrap();
    assert_eq!(r.next_expected_revision, 2);
    let r = target
        .append(
            &name("project-a"),
            ExpectedRevision::Exact(2),
            vec![event("ProjectUpdated", 11, "alice")],
        )
        .await
        .unwrap();
    assert_eq!(r.next_expected_revision, 3);
    assert!(r.position > after.last().unwrap().position);
    let a = target
        .read_stream(&name("project-a"), ReadStream::forward())
        .await
        .unwrap();
    assert_eq!(
        a.iter().map(|e| e.revision).collect::<Vec<_>>(),
        vec![0, 1, 2, 3]
    );
}

fn gunzip(bytes: &[u8]) -> String {
    let mut text = String::new();
    GzDecoder::new(bytes).read_to_string(&mut text).unwrap();
    text
}

fn gzip(text: &str) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(text.as_bytes()).unwrap();
    e.finish().unwrap()
}

/// Verifying refuses the file, and so does an import into a fresh store, which stays empty.
async fn refused(bytes: &[u8]) -> ArchiveError {
    let verified = archive::verify(bytes);
    assert!(verified.is_err(), "verify accepted it");
    let db = TestDatabase::create().await.unwrap();
    let s = store(&db).await;
    let err = s
        .import_archive(bytes, &mut |_| {})
        .await
        .expect_err("the import accepted it");
    assert_eq!(s.count_events_and_streams().await.unwrap(), (0, 0));
    assert_eq!(
        std::mem::discriminant(&err),
        std::mem::discriminant(&verified.unwrap_err()),
        "verify and import disagree"
    );
    err
}

#[tokio::test]
async fn a_truncated_archive_is_refused_and_nothing_is_written() {
    let bytes = exported().await;
    // Cut in the middle of the compressed data.
    let err = refused(&bytes[..bytes.len() / 2]).await;
    assert!(matches!(err, ArchiveError::Truncated(_)), "{err}");
    // Cut at a line boundary: complete lines, well compressed, but no trailer.
    let text = gunzip(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    let cut = lines[..lines.len() - 1].join("\n") + "\n";
    let err = refused(&gzip(&cut)).await;
    assert!(matches!(err, ArchiveError::Truncated(_)), "{err}");
    // Without the stream lines either.
    let cut = lines[..4].join("\n") + "\n";
    let err = refused(&gzip(&cut)).await;
    assert!(matches!(err, ArchiveError::Truncated(_)), "{err}");
}

#[tokio::test]
async fn an_archive_with_one_byte_of_an_event_changed_is_refused_and_nothing_is_written() {
    let bytes = exported().await;
    let text = gunzip(&bytes);
    assert!(text.contains("OrderPaid number 5"));
    // The same length, the same valid JSON: only the checksum tells.
    let tampered = text.replacen("OrderPaid number 5", "OrderPaid number 6", 1);
    let err = refused(&gzip(&tampered)).await;
    assert!(
        matches!(err, ArchiveError::ChecksumMismatch { .. }),
        "{err}"
    );
    // A byte of the compressed file changed: gzip's own check, or ours.
    let mut flipped = bytes.clone();
    let i = flipped.len() / 2;
    flipped[i] ^= 0x01;
    refused(&flipped).await;
    // The untouched file is accepted, so the refusals above are about the changes.
    archive::verify(&bytes[..]).unwrap();
}

#[tokio::test]
async fn a_file_that_is_not_an_archive_is_refused_and_nothing_is_written() {
    let err = refused(b"{\"format\":\"atelier-event-archive\",\"version\":1}\n").await;
    assert!(matches!(err, ArchiveError::NotAnArchive(_)), "{err}");
    let err = refused(&gzip("{\"format\":\"something-else\",\"version\":1}\n")).await;
    assert!(matches!(err, ArchiveError::NotAnArchive(_)), "{err}");
    let err = refused(&gzip("hello\n")).await;
    assert!(matches!(err, ArchiveError::NotAnArchive(_)), "{err}");
    let err = refused(&[]).await;
    assert!(matches!(err, ArchiveError::NotAnArchive(_)), "{err}");
}

#[tokio::test]
async fn an_archive_whose_revisions_skip_is_refused_even_with_a_valid_checksum() {
    let bytes = exported().await;
    let text = gunzip(&bytes);
    // Rewrite the file as an exporter would, with one revision changed.
    let mut lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let trailer = lines.pop().unwrap();
    let i = lines
        .iter()
        .position(|l| l["type"] == "ProjectRenamed")
        .unwrap();
    lines[i]["revision"] = json!(5);
    let mut body = String::new();
    for l in &lines {
        body.push_str(&serde_json::to_string(l).unwrap());
        body.push('\n');
    }
    use sha2::Digest;
    let sha = hex::encode(sha2::Sha256::digest(body.as_bytes()));
    let mut trailer = trailer;
    trailer["sha256"] = json!(sha);
    body.push_str(&serde_json::to_string(&trailer).unwrap());
    body.push('\n');
    let err = refused(&gzip(&body)).await;
    assert!(matches!(err, ArchiveError::Corrupt { .. }), "{err}");
}

#[tokio::test]
async fn an_import_into_a_store_that_is_not_empty_is_refused_and_writes_nothing() {
    let bytes = exported().await;
    let db = TestDatabase::create().await.unwrap();
    let s = store(&db).await;
    s.append(
        &name("existing-1"),
        ExpectedRevision::NoStream,
        vec![event("Existing", 0, "eve")],
    )
    .await
    .unwrap();
    let err = s.import_archive(&bytes[..], &mut |_| {}).await.unwrap_err();
    assert!(
        matches!(
            err,
            ArchiveError::NotEmpty {
                events: 1,
                streams: 1
            }
        ),
        "{err}"
    );
    assert_eq!(s.count_events_and_streams().await.unwrap(), (1, 1));
    // A store with only a stream's metadata is not empty either.
    let db = TestDatabase::create().await.unwrap();
    let s = store(&db).await;
    s.set_stream_metadata(&name("meta-1"), StreamMetadata::default())
        .await
        .unwrap();
    let err = s.import_archive(&bytes[..], &mut |_| {}).await.unwrap_err();
    assert!(matches!(err, ArchiveError::NotEmpty { .. }), "{err}");
    assert_eq!(s.count_events_and_streams().await.unwrap(), (0, 1));
}

#[tokio::test]
async fn the_log_query_filters_on_metadata_and_time_and_pages_by_position() {
    let db = TestDatabase::create().await.unwrap();
    let s = store(&db).await;
    fill(&s).await;
    let all = all_events(&s).await;
    let types = |events: &[RecordedEvent]| -> Vec<String> {
        events.iter().map(|e| e.event_type.clone()).collect()
    };
    let by_alice = LogQuery {
        actor: Some("alice".into()),
        ..LogQuery::default()
    };
    let got = s
        .query_log(&by_alice, Position::START, None, 100)
        .await
        .unwrap();
    assert_eq!(
        types(&got),
        ["ProjectCreated", "ProjectRenamed", "ProjectUpdated"]
    );
    assert!(got.iter().all(|e| by_alice.matches(e)));
    // Paged: two, then the rest after the last one returned.
    let first = s
        .query_log(&by_alice, Position::START, None, 2)
        .await
        .unwrap();
    let rest = s
        .query_log(&by_alice, first[1].position, None, 2)
        .await
        .unwrap();
    assert_eq!(types(&first), ["ProjectCreated", "ProjectRenamed"]);
    assert_eq!(types(&rest), ["ProjectUpdated"]);
    // Up to a position.
    let upto = s
        .query_log(&by_alice, Position::START, Some(first[0].position), 100)
        .await
        .unwrap();
    assert_eq!(types(&upto), ["ProjectCreated"]);
    // The last ones, oldest first.
    let last = s
        .query_log_last(&LogQuery::default(), None, 2)
        .await
        .unwrap();
    assert_eq!(types(&last), ["ProjectUpdated", "BuildSucceeded"]);
    // Category, type, correlation, organization; nobody.
    let q = LogQuery {
        category: Some("build".into()),
        event_type: Some("BuildStarted".into()),
        correlation_id: Some("corr-2".into()),
        org_id: Some("0190a1b2-0000-7000-8000-000000000001".into()),
        ..LogQuery::default()
    };
    assert_eq!(
        types(&s.query_log(&q, Position::START, None, 100).await.unwrap()),
        ["BuildStarted"]
    );
    let nobody = LogQuery {
        actor: Some("mallory".into()),
        ..LogQuery::default()
    };
    assert!(
        s.query_log(&nobody, Position::START, None, 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(!all.iter().any(|e| nobody.matches(e)));
    // Time: since is inclusive, until exclusive.
    let t: DateTime<Utc> = all[3].created;
    let since = LogQuery {
        since: Some(t),
        ..LogQuery::default()
    };
    let got = s
        .query_log(&since, Position::START, None, 100)
        .await
        .unwrap();
    let want: Vec<_> = all.iter().filter(|e| e.created >= t).cloned().collect();
    assert_eq!(got, want);
    let until = LogQuery {
        until: Some(t),
        ..LogQuery::default()
    };
    let got = s
        .query_log(&until, Position::START, None, 100)
        .await
        .unwrap();
    assert!(got.iter().all(|e| e.created < t));
    assert_eq!(got.len() + want.len(), all.len());
}

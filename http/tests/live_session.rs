//! The live feed's hub and sessions over the in-memory store: the seam between catching up and
//! following the hub, lag, and tenant filtering, without HTTP in the way.

use std::sync::Arc;
use std::time::Duration;

use atelier_http::live::LiveSettings;
use atelier_http::live::channels::Channel;
use atelier_http::live::hub::Hub;
use atelier_http::live::session::{Next, Session};
use atelier_store::memory::MemoryEventStore;
use atelier_store::{EventData, EventStore, ExpectedRevision, Position, StreamName};
use serde_json::json;
use uuid::Uuid;

async fn append(store: &MemoryEventStore, org: Uuid, category: &str, n: usize) -> Vec<Position> {
    let stream = StreamName::new(format!("{category}-{}", Uuid::now_v7())).unwrap();
    let events = (0..n)
        .map(|i| {
            EventData::new("ThingHappened", json!({ "i": i }))
                .with_metadata(json!({ "org_id": org }))
        })
        .collect();
    store
        .append(&stream, ExpectedRevision::NoStream, events)
        .await
        .unwrap();
    store
        .read_stream(&stream, atelier_store::ReadStream::forward())
        .await
        .unwrap()
        .iter()
        .map(|e| e.position)
        .collect()
}

async fn next_event(session: &mut Session) -> Position {
    match tokio::time::timeout(Duration::from_secs(10), session.next())
        .await
        .expect("no event in time")
    {
        Next::Event(e) => e.position(),
        other => panic!("expected an event, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_catching_up_while_writes_go_on_sends_every_event_once_in_order() {
    let store = MemoryEventStore::new();
    let org = Uuid::now_v7();
    let mut expected = Vec::new();
    for _ in 0..30 {
        expected.extend(append(&store, org, "project", 100).await);
    }
    let hub = Hub::start(Arc::new(store.clone()), LiveSettings::default())
        .await
        .unwrap();
    // Writers keep going while the session reads 3,000 events of backlog and joins the hub.
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut written = Vec::new();
            for _ in 0..200 {
                written.extend(append(&store, org, "project", 3).await);
                tokio::task::yield_now().await;
            }
            written
        })
    };
    let mut session = Session::new(hub.clone(), org);
    session
        .subscribe(vec![Channel::All], Some(Position::START))
        .unwrap();
    let mut received = Vec::new();
    while received.len() < expected.len() + 600 {
        received.push(next_event(&mut session).await);
    }
    expected.extend(writer.await.unwrap());
    assert_eq!(received, expected);
}

#[tokio::test]
async fn a_session_that_does_not_keep_up_is_cut_off_and_told_its_last_position() {
    let store = MemoryEventStore::new();
    let org = Uuid::now_v7();
    let settings = LiveSettings {
        queue: 5,
        ..LiveSettings::default()
    };
    let hub = Hub::start(Arc::new(store.clone()), settings).await.unwrap();
    let mut session = Session::new(hub.clone(), org);
    session.subscribe(vec![Channel::All], None).unwrap();
    let first = append(&store, org, "project", 1).await;
    assert_eq!(next_event(&mut session).await, first[0]);
    let burst = append(&store, org, "project", 20).await;
    assert!(
        hub.wait_for(*burst.last().unwrap(), Duration::from_secs(10))
            .await
    );
    match session.next().await {
        Next::Lagged(position) => assert_eq!(position, first[0]),
        other => panic!("expected lagged, got {other:?}"),
    }
}

#[tokio::test]
async fn a_session_gets_only_its_organizations_events_on_its_channels() {
    let store = MemoryEventStore::new();
    let (mine, theirs) = (Uuid::now_v7(), Uuid::now_v7());
    let hub = Hub::start(Arc::new(store.clone()), LiveSettings::default())
        .await
        .unwrap();
    let mut session = Session::new(hub.clone(), mine);
    session
        .subscribe(vec![Channel::parse("category:build").unwrap()], None)
        .unwrap();
    append(&store, theirs, "build", 3).await;
    append(&store, mine, "project", 3).await;
    let wanted = append(&store, mine, "build", 1).await;
    assert_eq!(next_event(&mut session).await, wanted[0]);
    // Catching up from the start filters the same way.
    let mut again = Session::new(hub, mine);
    again
        .subscribe(
            vec![Channel::parse("category:build").unwrap()],
            Some(Position::START),
        )
        .unwrap();
    assert_eq!(next_event(&mut again).await, wanted[0]);
}

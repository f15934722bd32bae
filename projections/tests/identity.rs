//! The identity read models against a real PostgreSQL: organizations, memberships and users
//! follow their events, members see their organizations and others do not, and a rebuild gives
//! the same rows.

use std::sync::Arc;
use std::time::Duration;

use atelier_domain::DomainEvent;
use atelier_domain::identity::Role;
use atelier_domain::identity::organization::{JsonObject, OrgEvent, OrgName, OrgProfile};
use atelier_domain::identity::user::{Email, UserEvent, UserProfile, Username};
use atelier_projections::Registry;
use atelier_projections::identity::{
    DIRECTORY, DirectoryProjection, get_organization, list_members,
};
use atelier_store::postgres::{PgConfig, PgEventStore};
use atelier_store::testing::TestDatabase;
use atelier_store::{EventData, EventStore, ExpectedRevision, Position, StreamName};
use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

fn t(s: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
}

async fn append<E: DomainEvent>(store: &dyn EventStore, stream: String, events: &[E]) -> Position {
    let data = events
        .iter()
        .map(|e| {
            let (ty, data) = e.encode();
            EventData::new(ty, data)
        })
        .collect();
    store
        .append(
            &StreamName::new(stream).unwrap(),
            ExpectedRevision::Any,
            data,
        )
        .await
        .unwrap()
        .position
}

fn user(id: Uuid, name: &str) -> UserEvent {
    UserEvent::UserRegistered {
        user_id: id,
        username: Username::parse(name).unwrap(),
        profile: UserProfile {
            email: Email::parse(&format!("{name}@example.com")).unwrap(),
            full_name: None,
        },
        is_superadmin: false,
        created_at: t(0),
    }
}

#[actix_web::test]
async fn organizations_and_their_members_follow_their_events_and_only_members_see_them() {
    let db = TestDatabase::create().await.unwrap();
    let pool = db.pool(8).await.unwrap();
    let store: Arc<dyn EventStore> = Arc::new(PgEventStore::with_pool(
        pool.clone(),
        PgConfig::new(&db.url),
    ));
    let (org, alice, bob, carol) = (
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
    );
    for (id, name) in [(alice, "alice"), (bob, "bob"), (carol, "carol")] {
        append(store.as_ref(), format!("user-{id}"), &[user(id, name)]).await;
    }
    let profile = |name: &str| OrgProfile {
        name: OrgName::parse(name).unwrap(),
        description: Some("makers".into()),
        settings: JsonObject::parse("settings", &json!({"theme": "dark"})).unwrap(),
        quotas: JsonObject::default(),
    };
    let head = append(
        store.as_ref(),
        format!("org-{org}"),
        &[
            OrgEvent::OrganizationCreated {
                org_id: org,
                profile: profile("Acme"),
                created_at: t(1),
            },
            OrgEvent::MemberAdded {
                org_id: org,
                user_id: alice,
                role: Role::Owner,
                at: t(1),
            },
            OrgEvent::MemberAdded {
                org_id: org,
                user_id: bob,
                role: Role::Viewer,
                at: t(2),
            },
            OrgEvent::MemberRoleChanged {
                org_id: org,
                user_id: bob,
                role: Role::Admin,
                at: t(3),
            },
            OrgEvent::OrganizationUpdated {
                org_id: org,
                profile: profile("Acme Corp"),
                updated_at: t(4),
            },
            OrgEvent::OrganizationDeactivated {
                org_id: org,
                at: t(5),
            },
        ],
    )
    .await;
    let registry = Registry::new();
    registry.start(Arc::new(DirectoryProjection), store.clone(), pool.clone());
    registry
        .wait_for(DIRECTORY, head, Duration::from_secs(20))
        .await
        .unwrap();

    let seen = get_organization(&pool, bob, false, org)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen.name, "Acme Corp");
    assert_eq!(seen.settings, json!({"theme": "dark"}));
    assert_eq!(seen.member_count, 2);
    assert!(!seen.is_active);
    assert_eq!(seen.revision, 5);
    assert_eq!(seen.updated_at, t(5));
    assert!(
        get_organization(&pool, carol, false, org)
            .await
            .unwrap()
            .is_none(),
        "not a member: not found"
    );
    assert!(
        get_organization(&pool, carol, true, org)
            .await
            .unwrap()
            .is_some()
    );
    let members: Vec<_> = list_members(&pool, org)
        .await
        .unwrap()
        .into_iter()
        .map(|m| (m.username, m.role))
        .collect();
    assert_eq!(
        members,
        [
            ("alice".into(), "owner".into()),
            ("bob".into(), "admin".into())
        ]
    );

    // A member leaves; the organization is deleted: nothing of it stays.
    let head = append(
        store.as_ref(),
        format!("org-{org}"),
        &[
            OrgEvent::MemberRemoved {
                org_id: org,
                user_id: bob,
                at: t(6),
            },
            OrgEvent::OrganizationDeleted {
                org_id: org,
                deleted_at: t(7),
            },
        ],
    )
    .await;
    registry
        .wait_for(DIRECTORY, head, Duration::from_secs(20))
        .await
        .unwrap();
    assert!(
        get_organization(&pool, alice, true, org)
            .await
            .unwrap()
            .is_none()
    );
    assert!(list_members(&pool, org).await.unwrap().is_empty());
}

#[actix_web::test]
async fn a_rebuilt_identity_read_model_has_the_same_rows() {
    let db = TestDatabase::create().await.unwrap();
    let pool = db.pool(8).await.unwrap();
    let store: Arc<dyn EventStore> = Arc::new(PgEventStore::with_pool(
        pool.clone(),
        PgConfig::new(&db.url),
    ));
    let (org, alice) = (Uuid::now_v7(), Uuid::now_v7());
    append(
        store.as_ref(),
        format!("user-{alice}"),
        &[user(alice, "alice")],
    )
    .await;
    append(
        store.as_ref(),
        format!("user-{alice}"),
        &[UserEvent::SuperadminChanged {
            user_id: alice,
            is_superadmin: true,
            at: t(2),
        }],
    )
    .await;
    let head = append(
        store.as_ref(),
        format!("org-{org}"),
        &[
            OrgEvent::OrganizationCreated {
                org_id: org,
                profile: OrgProfile {
                    name: OrgName::parse("Acme").unwrap(),
                    description: None,
                    settings: JsonObject::default(),
                    quotas: JsonObject::default(),
                },
                created_at: t(1),
            },
            OrgEvent::MemberAdded {
                org_id: org,
                user_id: alice,
                role: Role::Owner,
                at: t(1),
            },
        ],
    )
    .await;
    let snapshot = || async {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT row_to_json(o)::text FROM organizations o \
             UNION ALL SELECT row_to_json(m)::text FROM memberships m \
             UNION ALL SELECT row_to_json(u)::text FROM users u ORDER BY 1",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        rows
    };
    let registry = Registry::new();
    registry.start(Arc::new(DirectoryProjection), store.clone(), pool.clone());
    registry
        .wait_for(DIRECTORY, head, Duration::from_secs(20))
        .await
        .unwrap();
    let before = snapshot().await;
    assert_eq!(before.len(), 3, "{before:?}");
    assert!(
        before
            .iter()
            .any(|r| r.0.contains("\"is_superadmin\":true"))
    );
    registry
        .rebuild(DIRECTORY)
        .await
        .unwrap()
        .finished()
        .await
        .unwrap();
    registry
        .wait_for(DIRECTORY, head, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(snapshot().await, before);
}

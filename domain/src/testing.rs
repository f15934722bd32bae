//! Given/when/then for aggregates: given these past events, when this command, then these new
//! events (or this error).
//!
//! ```
//! # use atelier_domain::testing::given;
//! # use atelier_domain::factory::project::*;
//! # let (org, id) = (uuid::Uuid::nil(), uuid::Uuid::nil());
//! # let name = ProjectName::parse("demo").unwrap();
//! # let repo = RepoUrl::parse("https://example.com/demo.git").unwrap();
//! # let at = chrono::DateTime::from_timestamp(0, 0).unwrap();
//! given::<Project>([])
//!     .when(ProjectCommand::Create { project_id: id, org_id: org, name: name.clone(), repo_url: repo.clone(), build_command: None, at })
//!     .then([ProjectEvent::ProjectCreated { project_id: id, org_id: org, name, repo_url: repo, build_command: None, created_at: at }]);
//! ```

use crate::Aggregate;

/// Starts a scenario from past events.
pub fn given<A: Aggregate>(events: impl IntoIterator<Item = A::Event>) -> Given<A> {
    let events: Vec<_> = events.into_iter().collect();
    Given {
        state: A::fold(&events),
    }
}

/// A state built from past events.
pub struct Given<A: Aggregate> {
    state: A,
}

impl<A: Aggregate> Given<A> {
    /// Decides a command.
    pub fn when(self, command: A::Command) -> Then<A> {
        let outcome = self.state.decide(command);
        Then { outcome }
    }

    /// The state, for assertions on `evolve`.
    pub fn state(&self) -> &A {
        &self.state
    }
}

/// The outcome of a decision.
pub struct Then<A: Aggregate> {
    outcome: Result<Vec<A::Event>, A::Error>,
}

impl<A: Aggregate> Then<A>
where
    A::Error: PartialEq,
{
    /// Asserts the new events.
    #[track_caller]
    pub fn then(self, expected: impl IntoIterator<Item = A::Event>) {
        let expected: Vec<_> = expected.into_iter().collect();
        match self.outcome {
            Ok(events) => assert_eq!(events, expected, "unexpected events"),
            Err(e) => panic!("expected events {expected:?}, got the error {e:?}"),
        }
    }

    /// Asserts the refusal.
    #[track_caller]
    pub fn then_error(self, expected: A::Error) {
        match self.outcome {
            Ok(events) => panic!("expected the error {expected:?}, got events {events:?}"),
            Err(e) => assert_eq!(e, expected, "unexpected error"),
        }
    }
}

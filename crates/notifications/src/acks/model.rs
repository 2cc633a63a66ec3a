//! What an acknowledgement is, and the bounds of the stores.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How long a subject's acknowledgements are kept after its last one.
pub const RETENTION: Duration = Duration::from_secs(7 * 86_400);
/// The most records one subject keeps (two per user: seen and acknowledged).
pub const MAX_PER_SUBJECT: usize = 1_000;
/// The most subjects the memory store keeps.
pub const MAX_SUBJECTS: usize = 100_000;

/// What an acknowledgement says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AckKind {
    /// It was shown to the user on a visible page.
    Seen,
    /// The user acted on it (clicked "acknowledge"); implies seen.
    Acknowledged,
}

impl AckKind {
    /// `seen` or `acknowledged`.
    pub fn as_str(self) -> &'static str {
        match self {
            AckKind::Seen => "seen",
            AckKind::Acknowledged => "acknowledged",
        }
    }

    /// Parses `seen` or `acknowledged`.
    pub fn parse(text: &str) -> Option<AckKind> {
        match text {
            "seen" => Some(AckKind::Seen),
            "acknowledged" => Some(AckKind::Acknowledged),
            _ => None,
        }
    }

    /// Whether an acknowledgement of this kind meets a condition of kind `wanted` (an
    /// acknowledgement is also a sighting).
    pub fn meets(self, wanted: AckKind) -> bool {
        self >= wanted
    }
}

/// One acknowledgement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// Who (the token's `sub`).
    pub user: String,
    /// Of what kind.
    pub kind: AckKind,
    /// The user's role then, if any (escalation rules may ask for one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// When it was first recorded, Unix ms.
    pub at: u64,
}

/// Whether `subject` can be acknowledged: 1 to 128 characters of `A-Z a-z 0-9 _ . : - *`
/// (an event id such as `1732330000123-0`, a notification's UUID).
pub fn check_subject(subject: &str) -> Result<(), String> {
    let ok = (1..=128).contains(&subject.len())
        && subject
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{:?}: an event id (e.g. 1732330000123-0) or a notification id, 1 to 128 characters of A-Z a-z 0-9 _ . : -",
            subject.chars().take(140).collect::<String>()
        ))
    }
}

//! The transports a connection can use: a label for metrics and the admin list.

use serde::Serialize;

/// How a connection's events travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// `GET /api/realtime/events`.
    Sse = 0,
    /// `GET /api/realtime/ws`.
    Ws = 1,
}

impl Transport {
    /// Both.
    pub const ALL: [Transport; 2] = [Transport::Sse, Transport::Ws];

    /// The metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Sse => "sse",
            Transport::Ws => "ws",
        }
    }
}

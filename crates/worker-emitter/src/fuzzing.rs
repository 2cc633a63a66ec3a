//! Entry point of the webhook fuzz target (`fuzz/`, `make fuzz`) and of its corpus replay in
//! `make test`. Not an API for anything else.

use crate::webhook::{sign, signature_ok, timestamp_ok};

/// Webhook signature checks on arbitrary secret, timestamp, body and signature (the parts of
/// `data` between `0xff` bytes): a signature is accepted only when it is the one `sign` makes,
/// whatever its case or prefix; timestamps parse or are refused; nothing panics.
pub fn webhook(data: &[u8]) {
    let p: Vec<&[u8]> = data.splitn(4, |b| *b == 0xff).collect();
    let part = |i: usize| p.get(i).copied().unwrap_or_default();
    let (secret, body) = (part(0), part(2));
    let timestamp = String::from_utf8_lossy(part(1));
    let given = String::from_utf8_lossy(part(3));
    let right = sign(secret, &timestamp, body);
    assert!(
        signature_ok(secret, &timestamp, body, &right),
        "its own signature is refused"
    );
    let hex = |s: &str| s.trim().trim_start_matches("sha256=").to_ascii_lowercase();
    if signature_ok(secret, &timestamp, body, &given) {
        assert_eq!(hex(&given), hex(&right), "a wrong signature was accepted");
    }
    let _ = timestamp_ok(&timestamp, 1_796_000_000, 300);
}

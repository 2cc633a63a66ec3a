//! Acknowledgements in this process (the memory bus: `make run`, tests).

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::Instant,
};

use event_bus::Channel;

use super::model::{Ack, AckKind, MAX_PER_SUBJECT, MAX_SUBJECTS, RETENTION};
use crate::StoreError;

/// Acknowledgements in this process. Cheap to clone: clones share them.
#[derive(Clone, Debug, Default)]
pub struct MemoryAcks {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    /// (channel, subject) → its records and when the last came.
    subjects: HashMap<(String, String), (Vec<Ack>, Instant)>,
    /// Subjects in the order they were first recorded: the oldest go first past the bound.
    order: VecDeque<(String, String)>,
}

impl MemoryAcks {
    pub(super) fn record(&self, channel: &Channel, subject: &str, ack: &Ack) -> Result<(bool, Ack), StoreError> {
        let mut inner = self.inner.lock().unwrap();
        let k = (channel.logical().to_owned(), subject.to_owned());
        let now = Instant::now();
        if let Some((_, last)) = inner.subjects.get(&k) {
            if now.duration_since(*last) > RETENTION {
                inner.subjects.remove(&k);
            }
        }
        if !inner.subjects.contains_key(&k) {
            // The order may name a subject twice (expired, then recorded again): bounded too.
            while inner.subjects.len() >= MAX_SUBJECTS || inner.order.len() >= 2 * MAX_SUBJECTS {
                let Some(old) = inner.order.pop_front() else { break };
                inner.subjects.remove(&old);
            }
            inner.order.push_back(k.clone());
        }
        let (acks, last) = inner.subjects.entry(k).or_insert_with(|| (Vec::new(), now));
        let has = |acks: &[Ack], kind: AckKind| acks.iter().any(|a| a.user == ack.user && a.kind == kind);
        if let Some(first) = acks.iter().find(|a| a.user == ack.user && a.kind == ack.kind) {
            return Ok((false, first.clone()));
        }
        if acks.len() >= MAX_PER_SUBJECT {
            return Err(StoreError(format!(
                "{subject} has {MAX_PER_SUBJECT} acknowledgements already"
            )));
        }
        acks.push(ack.clone());
        if ack.kind == AckKind::Acknowledged && !has(acks, AckKind::Seen) {
            acks.push(Ack {
                kind: AckKind::Seen,
                ..ack.clone()
            });
        }
        *last = now;
        Ok((true, ack.clone()))
    }

    pub(super) fn list(&self, channel: &Channel, subject: &str) -> Vec<Ack> {
        let inner = self.inner.lock().unwrap();
        let k = (channel.logical().to_owned(), subject.to_owned());
        match inner.subjects.get(&k) {
            Some((acks, last)) if last.elapsed() <= RETENTION => acks.clone(),
            _ => Vec::new(),
        }
    }
}

//! Cursors: where a subscriber stands in every channel it follows, as one value.
//!
//! The text form is the SSE `id:` and the `last_event_id` query parameter, so it is compact and
//! URL-safe: base64url (no padding) of
//! `version=1, count, then per channel in name order: name length, name, ms, seq`,
//! where the numbers are LEB128 varints and each `ms` after the first is stored as a zig-zag
//! delta from the previous one (ids of channels that are followed together are close in time).
//! Four channels take about 80 characters, most of them the channel names.

use std::{fmt, str::FromStr};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use smallvec::SmallVec;

use crate::{envelope::EventId, name::Channel};

const VERSION: u8 = 1;
/// Longest text form accepted; longer input is rejected before it is decoded.
pub const MAX_CURSOR_LEN: usize = 2048;

/// A position in several channels: for each, the id of the last event delivered.
///
/// Kept as a vector sorted by channel: a gateway holds a few cursors per connection, usually
/// over a handful of channels, and a small vector is far smaller than a map node. The first
/// position is kept inline (most streams follow one channel): no allocation of its own, and
/// no cache line of its own to fetch when a stream looks at its cursors per event.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Cursor {
    positions: SmallVec<[(Channel, EventId); 1]>,
}

/// Why a text is not a cursor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CursorError {
    /// The text is empty.
    #[error("cursor is empty")]
    Empty,
    /// The text is longer than [`MAX_CURSOR_LEN`].
    #[error("cursor is {0} characters long; at most {MAX_CURSOR_LEN} are accepted")]
    TooLong(usize),
    /// The text is not base64url.
    #[error("cursor is not base64url text")]
    NotBase64,
    /// The cursor was written by a version this build does not read.
    #[error("cursor version {0} is not supported (this build reads version {VERSION})")]
    UnsupportedVersion(u8),
    /// The bytes end before the cursor does, or a number is too large.
    #[error("cursor is truncated or corrupt")]
    Truncated,
    /// A channel name inside is not valid.
    #[error("cursor names an invalid channel")]
    InvalidChannel,
    /// Channels are not in strictly ascending order (the canonical form has no duplicates).
    #[error("cursor channels are out of order or repeated")]
    NotCanonical,
    /// Bytes follow the last channel.
    #[error("cursor has trailing bytes")]
    TrailingBytes,
}

impl Cursor {
    /// A cursor with no positions.
    pub fn new() -> Self {
        Self::default()
    }

    fn find(&self, channel: &Channel) -> Result<usize, usize> {
        self.positions.binary_search_by(|(c, _)| c.cmp(channel))
    }

    /// The position in `channel`, if the cursor has one.
    pub fn get(&self, channel: &Channel) -> Option<EventId> {
        self.find(channel).ok().map(|i| self.positions[i].1)
    }

    /// Sets the position in `channel`, whatever it was.
    pub fn set(&mut self, channel: Channel, id: EventId) {
        match self.find(&channel) {
            Ok(i) => self.positions[i].1 = id,
            Err(i) => self.positions.insert(i, (channel, id)),
        }
    }

    /// Drops the position in `channel`, if the cursor has one.
    pub fn remove(&mut self, channel: &Channel) {
        if let Ok(i) = self.find(channel) {
            self.positions.remove(i);
        }
    }

    /// Moves the position in `channel` forward to `id`; an older id leaves it where it is.
    pub fn advance(&mut self, channel: &Channel, id: EventId) {
        self.advance_past(channel, id);
    }

    /// Like [`Cursor::advance`], and says whether `id` was past the position (or the channel
    /// had none): false means the event at `id` was seen already.
    pub fn advance_past(&mut self, channel: &Channel, id: EventId) -> bool {
        match self.find(channel) {
            Ok(i) => {
                let pos = &mut self.positions[i].1;
                let past = *pos < id;
                if past {
                    *pos = id;
                }
                past
            }
            Err(i) => {
                self.positions.insert(i, (channel.clone(), id));
                true
            }
        }
    }

    /// Every channel and its position, in channel name order.
    pub fn iter(&self) -> impl Iterator<Item = (&Channel, EventId)> {
        self.positions.iter().map(|(c, id)| (c, *id))
    }

    /// Whether the cursor has no positions.
    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }

    /// The positions of the given channels only.
    pub fn restricted_to(&self, channels: &[Channel]) -> Cursor {
        channels
            .iter()
            .filter_map(|c| self.get(c).map(|id| (c.clone(), id)))
            .collect()
    }

    /// Appends the text form (what `to_string` gives) to `out`, allocating nothing when `out`
    /// has room: a stream writes it with every message.
    pub fn write_text(&self, out: &mut Vec<u8>) {
        // The binary form on the stack for the usual few channels.
        let mut stack = [0u8; 256];
        let heap;
        let bin: &[u8] = if self.binary_len() <= stack.len() {
            let n = self.encode_into(&mut Slice { buf: &mut stack, at: 0 });
            &stack[..n]
        } else {
            heap = self.encode();
            &heap
        };
        let start = out.len();
        out.resize(start + base64::encoded_len(bin.len(), false).unwrap_or(0), 0);
        let n = URL_SAFE_NO_PAD.encode_slice(bin, &mut out[start..]).unwrap_or(0);
        out.truncate(start + n);
    }

    /// An upper bound of the binary form's length.
    fn binary_len(&self) -> usize {
        2 + self
            .positions
            .iter()
            .map(|(c, _)| 1 + c.as_str().len() + 20)
            .sum::<usize>()
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.binary_len());
        self.encode_into(&mut out);
        out
    }

    /// Writes the binary form; returns its length.
    fn encode_into(&self, out: &mut impl Sink) -> usize {
        out.push(VERSION);
        put_varint(out, self.positions.len() as u64);
        let mut prev_ms = 0u64;
        for (i, (channel, id)) in self.positions.iter().enumerate() {
            let name = channel.as_str().as_bytes();
            out.push(name.len() as u8);
            out.extend_from_slice(name);
            if i == 0 {
                put_varint(out, id.ms);
            } else {
                put_varint(out, zigzag(id.ms.wrapping_sub(prev_ms) as i64));
            }
            put_varint(out, id.seq);
            prev_ms = id.ms;
        }
        out.len()
    }

    fn decode(bytes: &[u8]) -> Result<Self, CursorError> {
        let mut r = Reader { bytes, at: 0 };
        let version = r.byte()?;
        if version != VERSION {
            return Err(CursorError::UnsupportedVersion(version));
        }
        let count = r.varint()?;
        if count > 256 {
            return Err(CursorError::Truncated);
        }
        let mut positions = SmallVec::with_capacity(count as usize);
        let mut prev: Option<(Channel, u64)> = None;
        for i in 0..count {
            let len = r.byte()? as usize;
            let name = r.take(len)?;
            let name = std::str::from_utf8(name).map_err(|_| CursorError::InvalidChannel)?;
            let channel = Channel::new(name).map_err(|_| CursorError::InvalidChannel)?;
            let raw_ms = r.varint()?;
            let ms = match &prev {
                None if i == 0 => raw_ms,
                Some((_, prev_ms)) => prev_ms.wrapping_add(unzigzag(raw_ms) as u64),
                None => unreachable!("prev is set after the first channel"),
            };
            let seq = r.varint()?;
            if let Some((prev_channel, _)) = &prev {
                if *prev_channel >= channel {
                    return Err(CursorError::NotCanonical);
                }
            }
            prev = Some((channel.clone(), ms));
            positions.push((channel, EventId { ms, seq }));
        }
        if r.at != bytes.len() {
            return Err(CursorError::TrailingBytes);
        }
        Ok(Cursor { positions })
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&URL_SAFE_NO_PAD.encode(self.encode()))
    }
}

impl FromStr for Cursor {
    type Err = CursorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(CursorError::Empty);
        }
        if s.len() > MAX_CURSOR_LEN {
            return Err(CursorError::TooLong(s.len()));
        }
        let bytes = URL_SAFE_NO_PAD.decode(s).map_err(|_| CursorError::NotBase64)?;
        Cursor::decode(&bytes)
    }
}

impl FromIterator<(Channel, EventId)> for Cursor {
    /// Later positions of a repeated channel replace earlier ones.
    fn from_iter<I: IntoIterator<Item = (Channel, EventId)>>(iter: I) -> Self {
        let mut cursor = Cursor::new();
        for (channel, id) in iter {
            cursor.set(channel, id);
        }
        cursor
    }
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Where the binary form is written: a vector, or a buffer on the stack.
trait Sink {
    fn push(&mut self, b: u8);
    fn extend_from_slice(&mut self, bytes: &[u8]);
    fn len(&self) -> usize;
}

impl Sink for Vec<u8> {
    fn push(&mut self, b: u8) {
        Vec::push(self, b)
    }
    fn extend_from_slice(&mut self, bytes: &[u8]) {
        Vec::extend_from_slice(self, bytes)
    }
    fn len(&self) -> usize {
        Vec::len(self)
    }
}

/// A fixed buffer known to be large enough ([`Cursor::binary_len`]).
struct Slice<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl Sink for Slice<'_> {
    fn push(&mut self, b: u8) {
        self.buf[self.at] = b;
        self.at += 1;
    }
    fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.buf[self.at..self.at + bytes.len()].copy_from_slice(bytes);
        self.at += bytes.len();
    }
    fn len(&self) -> usize {
        self.at
    }
}

fn put_varint(out: &mut impl Sink, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, CursorError> {
        let b = *self.bytes.get(self.at).ok_or(CursorError::Truncated)?;
        self.at += 1;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], CursorError> {
        let end = self.at.checked_add(n).ok_or(CursorError::Truncated)?;
        let s = self.bytes.get(self.at..end).ok_or(CursorError::Truncated)?;
        self.at = end;
        Ok(s)
    }

    fn varint(&mut self) -> Result<u64, CursorError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            let part = u64::from(b & 0x7f);
            if shift == 63 && part > 1 {
                return Err(CursorError::Truncated);
            }
            v |= part << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(CursorError::Truncated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Cursor {
        [
            (Channel::INVENTORY, EventId::new(1_732_330_000_123, 0)),
            (Channel::ORDERS, EventId::new(1_732_330_000_001, 4)),
            (Channel::PRICING, EventId::new(1_732_331_000_000, 0)),
            (Channel::LISTINGS, EventId::ZERO),
        ]
        .into_iter()
        .collect()
    }

    #[test]
    fn round_trips_and_is_compact_and_url_safe() {
        let c = sample();
        let text = c.to_string();
        assert!(text.len() <= 90, "{} chars: {text}", text.len());
        assert!(text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(text.parse::<Cursor>().unwrap(), c);
        assert_eq!(Cursor::new().to_string().parse::<Cursor>().unwrap(), Cursor::new());
        let extreme: Cursor = [
            (Channel::ORDERS, EventId::new(u64::MAX, u64::MAX)),
            (Channel::PRICING, EventId::ZERO),
        ]
        .into_iter()
        .collect();
        assert_eq!(extreme.to_string().parse::<Cursor>().unwrap(), extreme);
    }

    #[test]
    fn the_text_written_in_place_is_the_text_form_short_or_long() {
        let mut out = b"id: ".to_vec();
        sample().write_text(&mut out);
        assert_eq!(out, format!("id: {}", sample()).into_bytes());
        // Past the stack buffer: 60 channels of 20-character names.
        let long: Cursor = (0..60)
            .map(|i| {
                (
                    Channel::new(format!("channel-{i:012}")).unwrap(),
                    EventId::new(u64::MAX - i, i),
                )
            })
            .collect();
        let mut out = Vec::new();
        long.write_text(&mut out);
        assert_eq!(String::from_utf8(out).unwrap(), long.to_string());
        assert_eq!(long.to_string().parse::<Cursor>().unwrap(), long);
    }

    #[test]
    fn order_of_insertion_does_not_matter() {
        let a: Cursor = [
            (Channel::PRICING, EventId::new(1, 0)),
            (Channel::INVENTORY, EventId::new(2, 0)),
        ]
        .into_iter()
        .collect();
        let mut b = Cursor::new();
        b.advance(&Channel::INVENTORY, EventId::new(2, 0));
        b.set(Channel::PRICING, EventId::new(1, 0));
        assert_eq!(a, b);
        assert_eq!(a.to_string(), b.to_string());
        assert_eq!(a.restricted_to(&[Channel::PRICING, Channel::INVENTORY]), a);
        assert_eq!(a.to_string().parse::<Cursor>().unwrap(), a);
    }

    #[test]
    fn advance_only_moves_forward() {
        let mut c = Cursor::new();
        c.advance(&Channel::ORDERS, EventId::new(5, 0));
        c.advance(&Channel::ORDERS, EventId::new(4, 9));
        assert_eq!(c.get(&Channel::ORDERS), Some(EventId::new(5, 0)));
        c.advance(&Channel::ORDERS, EventId::new(5, 1));
        assert_eq!(c.get(&Channel::ORDERS), Some(EventId::new(5, 1)));
        // advance_past says whether the id was new: the seam's check.
        assert!(
            c.advance_past(&Channel::PRICING, EventId::new(1, 0)),
            "a channel without a position"
        );
        assert!(
            !c.advance_past(&Channel::PRICING, EventId::new(1, 0)),
            "the same id again"
        );
        assert!(!c.advance_past(&Channel::ORDERS, EventId::new(5, 0)), "an older id");
        assert!(c.advance_past(&Channel::ORDERS, EventId::new(6, 0)));
        assert_eq!(c.get(&Channel::ORDERS), Some(EventId::new(6, 0)));
    }

    #[test]
    fn garbage_is_rejected_with_a_reason() {
        let good = sample().to_string();
        let mut bytes = URL_SAFE_NO_PAD.decode(&good).unwrap();
        let enc = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
        assert_eq!("".parse::<Cursor>(), Err(CursorError::Empty));
        assert_eq!("a".repeat(3000).parse::<Cursor>(), Err(CursorError::TooLong(3000)));
        assert_eq!("not a cursor!".parse::<Cursor>(), Err(CursorError::NotBase64));
        assert_eq!("a.b".parse::<Cursor>(), Err(CursorError::NotBase64));
        // A bare stream id (what a naive client might send) is not a cursor either.
        assert!("1732330000123-0".parse::<Cursor>().is_err());
        assert_eq!(enc(&[9, 0]).parse::<Cursor>(), Err(CursorError::UnsupportedVersion(9)));
        assert_eq!(
            enc(&bytes[..bytes.len() - 1]).parse::<Cursor>(),
            Err(CursorError::Truncated)
        );
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(enc(&trailing).parse::<Cursor>(), Err(CursorError::TrailingBytes));
        assert_eq!(
            enc(&[1, 1, 3, b'a', b'{', b'}', 0, 0]).parse::<Cursor>(),
            Err(CursorError::InvalidChannel)
        );
        assert_eq!(
            enc(&[1, 2, 1, b'b', 0, 0, 1, b'a', 0, 0]).parse::<Cursor>(),
            Err(CursorError::NotCanonical)
        );
        assert_eq!(
            enc(&[1, 1, 1, b'a', 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0]).parse::<Cursor>(),
            Err(CursorError::Truncated)
        );
        // Every single-byte corruption either fails to parse or parses to a valid cursor: never a panic.
        for i in 0..bytes.len() {
            for v in [0u8, 1, 0x7f, 0x80, 0xff] {
                let old = bytes[i];
                bytes[i] = v;
                let _ = enc(&bytes).parse::<Cursor>();
                bytes[i] = old;
            }
        }
    }
}

//! The in-flight buffer: chunks read but not yet acknowledged by every sink, bounded in events
//! and bytes. When it is full the pipeline stops reading (backpressure) until sinks acknowledge.

use std::collections::VecDeque;
use std::path::PathBuf;

/// Offsets a chunk advances: `(source index, file id, offset)`.
pub type Offsets = Vec<(usize, u64, u64)>;

/// One chunk of events read together.
#[derive(Debug)]
pub struct Chunk {
    /// Sequence number.
    pub seq: u64,
    /// Events in the chunk (after transforms).
    pub events: usize,
    /// Bytes in the chunk.
    pub bytes: usize,
    /// File offsets that become safe once the chunk is acknowledged (or stored on disk).
    pub offsets: Offsets,
    /// The chunk's file in the on-disk buffer, when it has one.
    pub disk: Option<PathBuf>,
    /// Whether the chunk survives a restart without its source (stored on disk, or empty), so
    /// its offsets may be checkpointed before sinks acknowledge it.
    pub durable: bool,
    /// Whether its offsets were already handed out for the checkpoint.
    pub committed: bool,
}

/// Chunks in flight and the limits.
#[derive(Debug)]
pub struct InFlight {
    chunks: VecDeque<Chunk>,
    next_seq: u64,
    events: usize,
    bytes: usize,
    /// Most events in flight.
    pub max_events: usize,
    /// Most bytes in flight.
    pub max_bytes: usize,
}

impl InFlight {
    /// An empty buffer with limits.
    pub fn new(max_events: usize, max_bytes: usize) -> Self {
        Self {
            chunks: VecDeque::new(),
            next_seq: 1,
            events: 0,
            bytes: 0,
            max_events: max_events.max(1),
            max_bytes: max_bytes.max(1),
        }
    }

    /// Room left: `(events, bytes)`; zero when full.
    pub fn room(&self) -> (usize, usize) {
        (
            self.max_events.saturating_sub(self.events),
            self.max_bytes.saturating_sub(self.bytes),
        )
    }

    /// Whether reading must pause.
    pub fn is_full(&self) -> bool {
        let (events, bytes) = self.room();
        events == 0 || bytes == 0
    }

    /// Events and bytes in flight.
    pub fn fill(&self) -> (usize, usize) {
        (self.events, self.bytes)
    }

    /// Adds a chunk and returns its sequence number.
    pub fn push(&mut self, events: usize, bytes: usize, offsets: Offsets) -> u64 {
        self.push_chunk(events, bytes, offsets, None, false)
    }

    /// Adds a chunk that may be stored on disk (`disk`) or otherwise `durable`.
    pub fn push_chunk(
        &mut self,
        events: usize,
        bytes: usize,
        offsets: Offsets,
        disk: Option<PathBuf>,
        durable: bool,
    ) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.events += events;
        self.bytes += bytes;
        self.chunks.push_back(Chunk {
            seq,
            events,
            bytes,
            offsets,
            disk,
            durable,
            committed: false,
        });
        seq
    }

    /// The sequence number the next chunk gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Numbers the next chunks after `seq` (chunks of an earlier run are stored up to it).
    pub fn start_after(&mut self, seq: u64) {
        self.next_seq = self.next_seq.max(seq + 1);
    }

    /// The offsets of the oldest durable chunks not committed yet, in order, up to the first
    /// chunk that is not durable (offsets must be checkpointed in order).
    pub fn commit_durable(&mut self) -> Offsets {
        let mut out = Vec::new();
        for chunk in &mut self.chunks {
            if !chunk.committed {
                if !chunk.durable {
                    break;
                }
                chunk.committed = true;
                out.append(&mut chunk.offsets);
            }
        }
        out
    }

    /// The last sequence number handed out (0 before the first).
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// Removes every chunk up to and including `seq` and returns them, oldest first.
    pub fn ack(&mut self, seq: u64) -> Vec<Chunk> {
        let mut done = Vec::new();
        while self.chunks.front().is_some_and(|c| c.seq <= seq) {
            if let Some(chunk) = self.chunks.pop_front() {
                self.events -= chunk.events;
                self.bytes -= chunk.bytes;
                done.push(chunk);
            }
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_acked_in_order() {
        let mut b = InFlight::new(10, 1000);
        assert_eq!(b.room(), (10, 1000));
        let s1 = b.push(4, 100, vec![(0, 1, 100)]);
        let s2 = b.push(6, 200, vec![(0, 1, 300)]);
        assert!(b.is_full());
        assert_eq!(b.last_seq(), s2);
        let done = b.ack(s1);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].offsets, vec![(0, 1, 100)]);
        assert_eq!(b.fill(), (6, 200));
        assert!(!b.is_full());
        assert!(b.ack(s1).is_empty());
        assert_eq!(b.ack(s2).len(), 1);
        assert_eq!(b.fill(), (0, 0));
    }

    #[test]
    fn durable_chunks_commit_in_order() {
        let mut b = InFlight::new(100, 10_000);
        b.start_after(41);
        let s1 = b.push_chunk(1, 10, vec![(0, 1, 10)], Some("a".into()), true);
        assert_eq!(s1, 42);
        b.push_chunk(1, 10, vec![(0, 1, 20)], None, false);
        b.push_chunk(1, 10, vec![(0, 1, 30)], Some("c".into()), true);
        assert_eq!(b.commit_durable(), vec![(0, 1, 10)]);
        assert!(
            b.commit_durable().is_empty(),
            "stops at the chunk in memory only"
        );
        let done = b.ack(s1 + 1);
        assert!(done[0].committed && done[0].offsets.is_empty());
        assert!(!done[1].committed);
        assert_eq!(done[1].offsets, vec![(0, 1, 20)]);
        assert_eq!(b.commit_durable(), vec![(0, 1, 30)]);
    }
}

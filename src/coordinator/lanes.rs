//! In-flight slots per lane, and which queued batch names the next INSERT.
//!
//! A sink may spread INSERTs over independent destinations (a cluster's
//! shards, [`Sink::lanes`](crate::sink::Sink::lanes)), the lane of each
//! chosen from the INSERT's identity. Each lane has `max_inflight` slots of
//! its own, so a destination that is down fills only its own slots and the
//! others keep flowing.
//!
//! An INSERT's id is its first batch's sequence number, unless that
//! number's lane is full and in trouble: then it is the sequence number
//! with a salt in the top 16 bits (`seq | k << 48`, the first `k` whose
//! lane has room and no trouble). Sequence numbers stay below 2^48 (a
//! million batches a second for nine years), and each leads one INSERT, so
//! ids stay unique; the id is fixed when the INSERT is formed and kept by
//! every retry and spill file, so its lane never changes.
//!
//! Owns: the slot counts, the count of in-flight INSERTs per lane that have
//! failed an attempt (a lane in trouble), and the choice of the next
//! INSERT's id. Must not: change an INSERT once it is formed (retries and
//! replays resend it byte for byte, to the same lane), or steer around a
//! lane that is only busy: while every lane is healthy, INSERTs go where
//! their first batch says and wait for a slot there, so the weights hold.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use tokio::sync::Notify;

const SEQ_MASK: u64 = (1 << 48) - 1;
/// Salts tried before the batch waits: with any lane healthy, one in 64
/// tries fails to find it only if its weight share is under 7 %.
const SALTS: u64 = 64;

/// What the delivery tasks tell the coordinator about their lane.
pub(super) struct Health {
    /// Per lane: in-flight INSERTs that have failed at least one attempt.
    troubled: Box<[AtomicUsize]>,
    /// Wakes the coordinator when a lane's trouble count changes.
    pub(super) changed: Notify,
}

impl Health {
    /// Marks one INSERT of `lane` as failing; undone by [`Health::recovered`].
    pub(super) fn failing(&self, lane: usize) {
        if let Some(n) = self.troubled.get(lane) {
            n.fetch_add(1, Relaxed);
            self.changed.notify_one();
        }
    }

    /// The INSERT marked by [`Health::failing`] is done (either way).
    pub(super) fn recovered(&self, lane: usize) {
        if let Some(n) = self.troubled.get(lane) {
            n.fetch_sub(1, Relaxed);
            self.changed.notify_one();
        }
    }

    fn is_troubled(&self, lane: usize) -> bool {
        self.troubled.get(lane).is_some_and(|n| n.load(Relaxed) > 0)
    }
}

/// The slots of every lane.
pub(super) struct Lanes {
    inflight: Box<[usize]>,
    max_inflight: usize,
    pub(super) health: std::sync::Arc<Health>,
}

impl Lanes {
    pub(super) fn new(lanes: usize, max_inflight: usize) -> Self {
        let lanes = lanes.max(1);
        Self {
            inflight: vec![0; lanes].into(),
            max_inflight,
            health: std::sync::Arc::new(Health {
                troubled: (0..lanes).map(|_| AtomicUsize::new(0)).collect(),
                changed: Notify::new(),
            }),
        }
    }

    /// A sink's lane number, folded into range (a sink that answers past
    /// its own `lanes()` shares the last lane rather than panicking).
    pub(super) fn clamp(&self, lane: usize) -> usize {
        lane.min(self.inflight.len() - 1)
    }

    fn has_room(&self, lane: usize) -> bool {
        self.inflight[lane] < self.max_inflight
    }

    /// Whether some lane has a free slot.
    pub(super) fn any_room(&self) -> bool {
        self.inflight.iter().any(|&n| n < self.max_inflight)
    }

    pub(super) fn started(&mut self, lane: usize) {
        self.inflight[lane] += 1;
    }

    pub(super) fn finished(&mut self, lane: usize) {
        self.inflight[lane] = self.inflight[lane].saturating_sub(1);
    }

    /// The id and lane of the next INSERT, led by the batch `seq`
    /// (`lane_of` is the sink's choice for an id): `seq` itself when its
    /// lane has a slot; a salted `seq` whose lane has a slot and no trouble
    /// when `seq`'s lane is full and in trouble; otherwise none, and the
    /// batch waits.
    pub(super) fn pick(&self, seq: u64, lane_of: impl Fn(u64) -> usize) -> Option<(u64, usize)> {
        let lane = self.clamp(lane_of(seq));
        if self.has_room(lane) {
            return Some((seq, lane));
        }
        if !self.health.is_troubled(lane) {
            return None;
        }
        let base = seq & SEQ_MASK;
        (1..=SALTS).find_map(|k| {
            let id = base | k << 48;
            let lane = self.clamp(lane_of(id));
            (self.has_room(lane) && !self.health.is_troubled(lane)).then_some((id, lane))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Even ids to lane 0, odd ones to lane 1.
    fn parity(id: u64) -> usize {
        (id % 2) as usize
    }

    #[test]
    fn a_batch_leads_its_own_lane_unless_that_lane_is_full_and_failing() {
        let mut l = Lanes::new(2, 1);
        assert_eq!(l.pick(4, parity), Some((4, 0)));
        l.started(0);
        // Lane 0 is only busy: wait for it, the weights hold.
        assert_eq!(l.pick(4, parity), None);
        assert!(l.any_room());
        // Lane 0 is failing: a salted id that lane 1 takes.
        l.health.failing(0);
        let (id, lane) = l.pick(4, |id| ((id >> 48) % 2) as usize).unwrap();
        assert_eq!((id, lane), (4 | 1 << 48, 1));
        assert_eq!(id & SEQ_MASK, 4);
        // No healthy lane with room: wait.
        l.started(1);
        assert_eq!(l.pick(4, parity), None);
        // A troubled lane with a free slot still takes its own INSERTs.
        l.finished(0);
        assert_eq!(l.pick(4, parity), Some((4, 0)));
        l.started(0);
        assert!(!l.any_room());
        l.health.recovered(0);
        assert_eq!(l.pick(4, parity), None);
    }

    #[test]
    fn one_lane_is_the_plain_slot_count() {
        let mut l = Lanes::new(0, 2);
        assert_eq!(l.clamp(7), 0);
        l.started(0);
        assert_eq!(l.pick(9, |_| 5), Some((9, 0)));
        l.started(0);
        assert!(!l.any_room());
    }
}

//! The hashing queue's rules, as a plain data structure (the hashing
//! threads wrap it in a mutex):
//!
//! - bounded: at most `capacity` jobs waiting or about to be submitted, in
//!   all; past that a caller is refused at once instead of waiting behind
//!   everyone (and costing a hash after it has given up);
//! - fair: each client bucket has its own line and may hold at most
//!   `per_client` places, and the hashing threads take one job from each
//!   waiting bucket in turn, so a flood from one address neither fills the
//!   queue nor delays a sign-in from another by more than one job per
//!   other waiting bucket.
//!
//! A place is reserved first ([`FairQueue::reserve`]) and filled later
//! ([`FairQueue::submit`]), so a caller learns whether it will be served
//! before it does anything else (such as counting a sign-in attempt).

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

/// Why a place was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// Every place is taken.
    Queue,
    /// This client holds its whole share.
    ClientShare,
}

pub struct FairQueue<K, T> {
    capacity: usize,
    per_client: usize,
    lines: HashMap<K, Line<T>>,
    /// Buckets with a job waiting, in serving order.
    turn: VecDeque<K>,
    /// Places taken: reserved and waiting.
    taken: usize,
}

struct Line<T> {
    jobs: VecDeque<T>,
    reserved: usize,
}

impl<K: Hash + Eq + Clone, T> FairQueue<K, T> {
    pub fn new(capacity: usize, per_client: usize) -> Self {
        Self {
            capacity,
            per_client: per_client.clamp(1, capacity.max(1)),
            lines: HashMap::new(),
            turn: VecDeque::new(),
            taken: 0,
        }
    }

    /// Jobs waiting and places reserved, in all.
    pub fn len(&self) -> usize {
        self.taken
    }

    /// Reserves a place for `client`.
    pub fn reserve(&mut self, client: &K) -> Result<(), Full> {
        if self.taken >= self.capacity {
            return Err(Full::Queue);
        }
        let line = self.lines.entry(client.clone()).or_insert_with(|| Line {
            jobs: VecDeque::new(),
            reserved: 0,
        });
        if line.jobs.len() + line.reserved >= self.per_client {
            return Err(Full::ClientShare);
        }
        line.reserved += 1;
        self.taken += 1;
        Ok(())
    }

    /// Gives up a reserved place without using it.
    pub fn release(&mut self, client: &K) {
        if let Some(line) = self.lines.get_mut(client) {
            if line.reserved > 0 {
                line.reserved -= 1;
                self.taken -= 1;
            }
            self.forget_if_empty(client);
        }
    }

    /// Fills a reserved place with a job.
    pub fn submit(&mut self, client: &K, job: T) {
        let Some(line) = self.lines.get_mut(client) else {
            debug_assert!(false, "submit without a reservation");
            return;
        };
        line.reserved = line.reserved.saturating_sub(1);
        if line.jobs.is_empty() {
            self.turn.push_back(client.clone());
        }
        line.jobs.push_back(job);
    }

    /// The next job: the oldest of the bucket whose turn it is.
    pub fn pop(&mut self) -> Option<T> {
        let client = self.turn.pop_front()?;
        let line = self.lines.get_mut(&client)?;
        let job = line.jobs.pop_front()?;
        self.taken -= 1;
        if line.jobs.is_empty() {
            self.forget_if_empty(&client);
        } else {
            self.turn.push_back(client);
        }
        Some(job)
    }

    fn forget_if_empty(&mut self, client: &K) {
        if self
            .lines
            .get(client)
            .is_some_and(|l| l.jobs.is_empty() && l.reserved == 0)
        {
            self.lines.remove(client);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(q: &mut FairQueue<&'static str, u32>, client: &'static str, job: u32) {
        q.reserve(&client).expect("a place");
        q.submit(&client, job);
    }

    #[test]
    fn clients_take_turns() {
        let mut q = FairQueue::new(100, 50);
        for job in 0..5 {
            push(&mut q, "flood", job);
        }
        push(&mut q, "alice", 100);
        push(&mut q, "bob", 200);
        let order: Vec<u32> = std::iter::from_fn(|| q.pop()).collect();
        // Alice and Bob each wait for one flood job at most.
        assert_eq!(order, [0, 100, 200, 1, 2, 3, 4]);
        assert_eq!(q.len(), 0);
        assert!(q.lines.is_empty());
    }

    #[test]
    fn the_queue_and_each_share_are_bounded() {
        let mut q = FairQueue::new(4, 2);
        push(&mut q, "a", 1);
        push(&mut q, "a", 2);
        assert_eq!(q.reserve(&"a"), Err(Full::ClientShare));
        push(&mut q, "b", 3);
        q.reserve(&"c").expect("the last place");
        assert_eq!(q.reserve(&"d"), Err(Full::Queue));
        q.release(&"c");
        assert_eq!(q.len(), 3);
        q.reserve(&"d").expect("freed");
        assert_eq!(q.pop(), Some(1));
        q.reserve(&"a").expect("a's share has room again");
    }

    #[test]
    fn released_places_leave_nothing_behind() {
        let mut q: FairQueue<&str, u32> = FairQueue::new(4, 2);
        q.reserve(&"a").expect("place");
        q.release(&"a");
        q.release(&"a");
        assert_eq!(q.len(), 0);
        assert!(q.lines.is_empty());
        assert_eq!(q.pop(), None);
    }
}

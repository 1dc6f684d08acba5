//! A streaming replica of the PostgreSQL primary for pure reads
//! (`AUTHQL_READ_DATABASE_URL`), used only while it is known to be fresh.
//!
//! A sampler notes the time, reads the primary's WAL insert position, then
//! the replica's replay position, every [`SAMPLE_EVERY`]. Once the replica
//! has replayed past a sampled position it holds every commit that
//! returned before that sample's time, so it is fresh while the newest
//! such time is at most `AUTHQL_READ_MAX_LAG` old, judged at each read
//! (failed or slow samples only let that time age). Reads go to the
//! primary when it is not fresh, when the replica fails a read, and after
//! this instance commits until the replica has replayed past that commit
//! (so an instance never reads older data than it wrote). README,
//! "Read replicas", states the bound this gives for other instances.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use sqlx::postgres::PgPool;

/// How often the replica's replay position is sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// A sample slower than this is abandoned (and the replica ages).
const SAMPLE_TIMEOUT: Duration = Duration::from_millis(250);
/// Samples waiting for the replica to replay past them; past this, a new
/// sample is merged into the newest one (its position, the older time:
/// the lag can only be overstated).
const PENDING_MAX: usize = 100;

/// Where one read goes, and why not to the replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadFrom {
    Replica,
    Primary(Fallback),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// The replica is further behind than the bound.
    Lagging,
    /// No sample succeeded lately, or the server is no standby streaming
    /// from this primary.
    Unknown,
    /// This instance committed something the replica has not replayed.
    OwnWrite,
    /// The replica failed the read itself.
    ReadFailed,
    /// The replica did not have it (a session made moments ago elsewhere).
    NotThere,
}

impl Fallback {
    fn name(self) -> &'static str {
        match self {
            Fallback::Lagging => "lagging",
            Fallback::Unknown => "unknown",
            Fallback::OwnWrite => "own_write",
            Fallback::ReadFailed => "read_failed",
            Fallback::NotThere => "not_there",
        }
    }
}

/// The pure part: primary positions sampled, and which of them the replica
/// has replayed.
#[derive(Debug, Default)]
pub struct ReplayTracker {
    /// (commits of this instance before the sample, primary LSN, sample time).
    pending: VecDeque<(u64, u64, Instant)>,
}

impl ReplayTracker {
    /// Records one sample taken at `at`: `commits` counted, then the
    /// primary's `primary_lsn`, then the replica's `replayed_lsn`. Returns
    /// the newest sample the replica has now replayed past, if any: its
    /// commit count and its time (the replica holds every commit that
    /// returned before it).
    pub fn observe(
        &mut self,
        commits: u64,
        primary_lsn: u64,
        replayed_lsn: u64,
        at: Instant,
    ) -> Option<(u64, Instant)> {
        if self.pending.len() < PENDING_MAX {
            self.pending.push_back((commits, primary_lsn, at));
        } else if let Some(newest) = self.pending.back_mut() {
            newest.0 = commits;
            newest.1 = primary_lsn;
        }
        let mut replayed = None;
        while let Some(&(commits, lsn, at)) = self.pending.front() {
            if lsn > replayed_lsn {
                break;
            }
            replayed = Some((commits, at));
            self.pending.pop_front();
        }
        replayed
    }
}

/// What the sampler knows when a read comes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Known {
    /// The newest sample time the replica is known to hold.
    pub replayed_at: Option<Instant>,
    /// Whether the last sample succeeded.
    pub last_ok: bool,
}

/// Where a read goes, from what the sampler knows and this instance's
/// commits.
pub fn read_from(
    known: Known,
    now: Instant,
    max_lag: Duration,
    committed: u64,
    caught_up: u64,
) -> ReadFrom {
    let fresh = known
        .replayed_at
        .is_some_and(|at| now.saturating_duration_since(at) <= max_lag);
    if !fresh {
        ReadFrom::Primary(if known.last_ok {
            Fallback::Lagging
        } else {
            Fallback::Unknown
        })
    } else if caught_up < committed {
        ReadFrom::Primary(Fallback::OwnWrite)
    } else {
        ReadFrom::Replica
    }
}

/// `X/Y` (PostgreSQL's pg_lsn text) as a number.
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (high, low) = text.split_once('/')?;
    Some((u64::from_str_radix(high, 16).ok()? << 32) | u64::from_str_radix(low, 16).ok()?)
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReadLabels {
    /// `replica` or `primary`.
    pub server: String,
    /// Why not the replica (empty for replica reads).
    pub reason: String,
}

/// The replica's figures for `/metrics`.
#[derive(Clone, Default)]
pub struct ReplicaStats {
    /// Lag at the last sample, seconds (-1: unknown).
    pub lag_seconds: Gauge<f64, AtomicU64>,
    /// Reads meant for the replica, by where they went.
    pub reads: Family<ReadLabels, Counter>,
}

pub struct Replica {
    pub pool: PgPool,
    max_lag: Duration,
    state: Arc<State>,
    sampler: tokio::task::JoinHandle<()>,
}

struct State {
    committed: AtomicU64,
    caught_up: AtomicU64,
    known: Mutex<Known>,
    stats: ReplicaStats,
}

impl Replica {
    /// Starts sampling `pool` against `primary`.
    pub fn start(pool: PgPool, primary: PgPool, max_lag: Duration) -> Self {
        let state = Arc::new(State {
            committed: AtomicU64::new(0),
            caught_up: AtomicU64::new(0),
            known: Mutex::new(Known::default()),
            stats: ReplicaStats::default(),
        });
        let sampler = tokio::spawn(sample_forever(
            pool.clone(),
            primary,
            Arc::downgrade(&state),
        ));
        Self {
            pool,
            max_lag,
            state,
            sampler,
        }
    }

    pub fn stats(&self) -> ReplicaStats {
        self.state.stats.clone()
    }

    /// The count every commit of this instance adds one to, after it
    /// committed ([`super::Writing`], [`super::Tx`]).
    pub fn commits(&self) -> &AtomicU64 {
        &self.state.committed
    }

    pub fn choose(&self) -> ReadFrom {
        let known = *lock(&self.state.known);
        let choice = read_from(
            known,
            Instant::now(),
            self.max_lag,
            self.state.committed.load(Ordering::SeqCst),
            self.state.caught_up.load(Ordering::SeqCst),
        );
        if let ReadFrom::Primary(why) = choice {
            self.count(why);
        }
        choice
    }

    pub fn count(&self, why: Fallback) {
        self.state
            .stats
            .reads
            .get_or_create(&ReadLabels {
                server: "primary".into(),
                reason: why.name().into(),
            })
            .inc();
    }

    pub fn served(&self) {
        self.state
            .stats
            .reads
            .get_or_create(&ReadLabels {
                server: "replica".into(),
                reason: String::new(),
            })
            .inc();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.sampler.abort();
    }
}

async fn sample_forever(replica: PgPool, primary: PgPool, state: std::sync::Weak<State>) {
    let mut tracker = ReplayTracker::default();
    let mut ticks = tokio::time::interval(SAMPLE_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(state) = state.upgrade() else {
            return;
        };
        // In this order: the time, the commits, then the positions.
        let at = Instant::now();
        let commits = state.committed.load(Ordering::SeqCst);
        let sampled = tokio::time::timeout(SAMPLE_TIMEOUT, positions(&primary, &replica)).await;
        let last_ok = match sampled {
            Ok(Ok((primary_lsn, replayed_lsn))) => {
                if let Some((commits, replayed_at)) =
                    tracker.observe(commits, primary_lsn, replayed_lsn, at)
                {
                    state.caught_up.fetch_max(commits, Ordering::SeqCst);
                    lock(&state.known).replayed_at = Some(replayed_at);
                }
                true
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "replica sample failed");
                false
            }
            Err(_) => false,
        };
        let mut known = lock(&state.known);
        known.last_ok = last_ok;
        let lag = match known.replayed_at {
            Some(replayed_at) if last_ok => Instant::now().saturating_duration_since(replayed_at),
            _ => Duration::MAX,
        };
        drop(known);
        state.stats.lag_seconds.set(if lag == Duration::MAX {
            -1.0
        } else {
            lag.as_secs_f64()
        });
    }
}

/// The primary's WAL insert position, then the replica's replay position
/// (in that order: what the replica replayed is compared with what the
/// primary had before). The insert position, not the write position: with
/// `synchronous_commit = off` a commit returns before its record is
/// written. The replica counts only while it is a standby streaming from a
/// server of this primary's system (not one left behind by a failover).
async fn positions(primary: &PgPool, replica: &PgPool) -> anyhow::Result<(u64, u64)> {
    let (primary_lsn, system): (String, i64) = sqlx::query_as(
        "SELECT pg_current_wal_insert_lsn()::text, system_identifier FROM pg_control_system()",
    )
    .fetch_one(primary)
    .await?;
    let replayed: Option<String> = sqlx::query_scalar(
        "SELECT pg_last_wal_replay_lsn()::text FROM pg_control_system()
         WHERE pg_is_in_recovery() AND system_identifier = $1
           AND EXISTS (SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming')",
    )
    .bind(system)
    .fetch_optional(replica)
    .await?
    .flatten();
    let replayed = replayed.ok_or_else(|| {
        anyhow::anyhow!("the read database is no standby streaming from this primary")
    })?;
    match (parse_lsn(&primary_lsn), parse_lsn(&replayed)) {
        (Some(p), Some(r)) => Ok((p, r)),
        _ => anyhow::bail!("unreadable WAL positions {primary_lsn}, {replayed}"),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_text_parses() {
        assert_eq!(parse_lsn("0/24000000"), Some(0x2400_0000));
        assert_eq!(parse_lsn("1/0"), Some(1 << 32));
        assert_eq!(parse_lsn("x"), None);
    }

    #[test]
    fn the_replica_holds_what_returned_before_the_newest_sample_it_passed() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut tracker = ReplayTracker::default();
        assert_eq!(tracker.observe(0, 100, 100, t0), Some((0, t0)));
        // Two commits, then the replica stops at 150.
        assert_eq!(tracker.observe(2, 200, 150, ms(100)), None);
        assert_eq!(tracker.observe(2, 300, 150, ms(1300)), None);
        // It replays past 200 (the sample that counted 2 commits), not 300.
        assert_eq!(tracker.observe(3, 300, 250, ms(1400)), Some((2, ms(100))));
        assert_eq!(tracker.observe(3, 300, 300, ms(1500)), Some((3, ms(1500))));
    }

    #[test]
    fn a_full_queue_merges_into_its_newest_sample() {
        let t0 = Instant::now();
        let mut tracker = ReplayTracker::default();
        for i in 0..PENDING_MAX as u64 {
            assert_eq!(
                tracker.observe(i, 1000 + i, 0, t0 + Duration::from_secs(i)),
                None
            );
        }
        let late = t0 + Duration::from_secs(500);
        assert_eq!(tracker.observe(500, 5000, 0, late), None);
        // Passing the merged position: its commits, the older time.
        let newest = t0 + Duration::from_secs(PENDING_MAX as u64 - 1);
        assert_eq!(tracker.observe(501, 6000, 6000, late), Some((501, newest)));
    }

    #[test]
    fn reads_leave_the_replica_for_lag_own_writes_and_silence() {
        let now = Instant::now();
        let lag = Duration::from_secs(1);
        let fresh = Known {
            replayed_at: Some(now),
            last_ok: true,
        };
        assert_eq!(read_from(fresh, now, lag, 3, 3), ReadFrom::Replica);
        assert_eq!(
            read_from(fresh, now, lag, 4, 3),
            ReadFrom::Primary(Fallback::OwnWrite)
        );
        let later = now + Duration::from_millis(1001);
        assert_eq!(
            read_from(fresh, later, lag, 0, 0),
            ReadFrom::Primary(Fallback::Lagging)
        );
        let failing = Known {
            last_ok: false,
            ..fresh
        };
        assert_eq!(
            read_from(failing, now, lag, 0, 0),
            ReadFrom::Replica,
            "still within the bound"
        );
        assert_eq!(
            read_from(failing, later, lag, 0, 0),
            ReadFrom::Primary(Fallback::Unknown)
        );
        assert_eq!(
            read_from(Known::default(), now, lag, 0, 0),
            ReadFrom::Primary(Fallback::Unknown)
        );
    }
}

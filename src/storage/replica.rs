//! A streaming replica of the PostgreSQL primary for pure reads
//! (`AUTHQL_READ_DATABASE_URL`), used only while it is known to be fresh.
//!
//! A sampler compares the primary's WAL position with the replica's replay
//! position every [`SAMPLE_EVERY`]. The replica is fresh while the oldest
//! primary position it has not replayed was sampled at most
//! `AUTHQL_READ_MAX_LAG` ago. Reads go to the primary when it is not, when
//! no sample succeeded lately, when the replica fails a read, and after
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
/// A verdict older than this is no verdict (the sampler is stuck).
const VERDICT_TTL: Duration = Duration::from_millis(300);
/// Samples waiting for the replica to replay past them (10 s of them).
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
    /// The last sample failed, or is too old, or the server is no standby.
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

/// What the last sample found.
#[derive(Debug, Clone, Copy)]
struct Verdict {
    at: Instant,
    fresh: Result<bool, ()>,
}

/// The pure part: primary positions sampled, and which of them the replica
/// has replayed.
#[derive(Debug, Default)]
pub struct ReplayTracker {
    /// (commits of this instance before the sample, primary LSN, when).
    pending: VecDeque<(u64, u64, Instant)>,
}

impl ReplayTracker {
    /// Records one sample: `commits` counted before reading `primary_lsn`,
    /// then the replica's `replayed_lsn`. Returns the commit count now
    /// known replayed (if any sample was passed) and the lag: how long ago
    /// the oldest primary position not yet replayed was sampled (zero when
    /// none is pending).
    pub fn observe(
        &mut self,
        commits: u64,
        primary_lsn: u64,
        replayed_lsn: u64,
        now: Instant,
    ) -> (Option<u64>, Duration) {
        if self.pending.len() < PENDING_MAX {
            self.pending.push_back((commits, primary_lsn, now));
        }
        let mut caught_up = None;
        while let Some(&(commits, lsn, _)) = self.pending.front() {
            if lsn > replayed_lsn {
                break;
            }
            caught_up = Some(commits);
            self.pending.pop_front();
        }
        let lag = self
            .pending
            .front()
            .map_or(Duration::ZERO, |&(_, _, at)| now.duration_since(at));
        (caught_up, lag)
    }
}

/// Where a read goes, from the last verdict and this instance's commits.
pub fn read_from(
    verdict: Option<(Instant, Result<bool, ()>)>,
    now: Instant,
    committed: u64,
    caught_up: u64,
) -> ReadFrom {
    match verdict {
        Some((at, Ok(true))) if now.duration_since(at) <= VERDICT_TTL => {
            if caught_up < committed {
                ReadFrom::Primary(Fallback::OwnWrite)
            } else {
                ReadFrom::Replica
            }
        }
        Some((at, Ok(false))) if now.duration_since(at) <= VERDICT_TTL => {
            ReadFrom::Primary(Fallback::Lagging)
        }
        _ => ReadFrom::Primary(Fallback::Unknown),
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
    state: Arc<State>,
    sampler: tokio::task::JoinHandle<()>,
}

struct State {
    committed: AtomicU64,
    caught_up: AtomicU64,
    verdict: Mutex<Option<Verdict>>,
    stats: ReplicaStats,
}

impl Replica {
    /// Starts sampling `pool` against `primary`.
    pub fn start(pool: PgPool, primary: PgPool, max_lag: Duration) -> Self {
        let state = Arc::new(State {
            committed: AtomicU64::new(0),
            caught_up: AtomicU64::new(0),
            verdict: Mutex::new(None),
            stats: ReplicaStats::default(),
        });
        let sampler = tokio::spawn(sample_forever(
            pool.clone(),
            primary,
            max_lag,
            Arc::downgrade(&state),
        ));
        Self {
            pool,
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
        let verdict = *lock(&self.state.verdict);
        let choice = read_from(
            verdict.map(|v| (v.at, v.fresh)),
            Instant::now(),
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

async fn sample_forever(
    replica: PgPool,
    primary: PgPool,
    max_lag: Duration,
    state: std::sync::Weak<State>,
) {
    let mut tracker = ReplayTracker::default();
    let mut ticks = tokio::time::interval(SAMPLE_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(state) = state.upgrade() else {
            return;
        };
        let commits = state.committed.load(Ordering::SeqCst);
        let sampled = tokio::time::timeout(VERDICT_TTL, positions(&primary, &replica)).await;
        let now = Instant::now();
        let fresh = match sampled {
            Ok(Ok((primary_lsn, replayed_lsn))) => {
                let (caught_up, lag) = tracker.observe(commits, primary_lsn, replayed_lsn, now);
                if let Some(commits) = caught_up {
                    state.caught_up.fetch_max(commits, Ordering::SeqCst);
                }
                state.stats.lag_seconds.set(lag.as_secs_f64());
                Ok(lag <= max_lag)
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "replica sample failed");
                state.stats.lag_seconds.set(-1.0);
                Err(())
            }
            Err(_) => {
                state.stats.lag_seconds.set(-1.0);
                Err(())
            }
        };
        *lock(&state.verdict) = Some(Verdict { at: now, fresh });
    }
}

/// The primary's WAL position, then the replica's replay position (in
/// that order: what the replica replayed is compared with what the
/// primary had before).
async fn positions(primary: &PgPool, replica: &PgPool) -> anyhow::Result<(u64, u64)> {
    let primary_lsn: String = sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
        .fetch_one(primary)
        .await?;
    let replayed: Option<String> = sqlx::query_scalar(
        "SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()::text END",
    )
    .fetch_one(replica)
    .await?;
    let replayed = replayed.ok_or_else(|| anyhow::anyhow!("the read database is no standby"))?;
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
    fn lag_is_the_age_of_the_oldest_position_not_replayed() {
        let t0 = Instant::now();
        let mut tracker = ReplayTracker::default();
        // Caught up at once.
        assert_eq!(tracker.observe(0, 100, 100, t0), (Some(0), Duration::ZERO));
        // Two commits, then the replica stops at 150.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(tracker.observe(2, 200, 150, t1), (None, Duration::ZERO));
        let t2 = t0 + Duration::from_millis(1300);
        assert_eq!(
            tracker.observe(2, 300, 150, t2),
            (None, Duration::from_millis(1200))
        );
        // It replays past 200 (the sample that counted 2 commits), not 300.
        let t3 = t0 + Duration::from_millis(1400);
        assert_eq!(
            tracker.observe(3, 300, 250, t3),
            (Some(2), Duration::from_millis(100))
        );
    }

    #[test]
    fn reads_leave_the_replica_for_lag_own_writes_and_silence() {
        let now = Instant::now();
        let recent = Some((now, Ok(true)));
        assert_eq!(read_from(recent, now, 3, 3), ReadFrom::Replica);
        assert_eq!(
            read_from(recent, now, 4, 3),
            ReadFrom::Primary(Fallback::OwnWrite)
        );
        assert_eq!(
            read_from(Some((now, Ok(false))), now, 0, 0),
            ReadFrom::Primary(Fallback::Lagging)
        );
        assert_eq!(
            read_from(Some((now, Err(()))), now, 0, 0),
            ReadFrom::Primary(Fallback::Unknown)
        );
        let old = now + Duration::from_secs(1);
        assert_eq!(
            read_from(recent, old, 0, 0),
            ReadFrom::Primary(Fallback::Unknown)
        );
        assert_eq!(
            read_from(None, now, 0, 0),
            ReadFrom::Primary(Fallback::Unknown)
        );
    }
}

//! `authql import` and `authql export`: the command-line front end to the
//! storage's batch writes and pages, beside HTTP as the other way in.
//!
//! Import reads on a thread of its own (the formats parse synchronously)
//! and hands over whole batches through a two-batch channel, so memory stays
//! constant for any file size. Each batch is checked against the rules
//! ([`crate::domain::import`]) and the database, then written in one
//! transaction: an interruption (Ctrl-C, a kill) never leaves half of one,
//! and a rerun passes over what is already there.

mod json_stream;
pub mod jsonl;
mod progress;
pub mod sources;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use chrono::Utc;

use crate::config::{ExportConfig, ImportConfig, OnConflict};
use crate::domain::audit::EventKind;
use crate::domain::import::{lookup_keys, plan_batch, ImportedUser, Seen, Skip, SkipReason};
use crate::domain::SignUpRules;
use crate::storage::{SecurityEvent, Store, StoreError};
use progress::Progress;
use sources::{read_records, SourceRecord};

/// Batches read ahead of the one being written.
const READ_AHEAD: usize = 2;
/// Users per page of an export.
const EXPORT_PAGE: i64 = 1000;
/// Tries of a batch that lost a race with a sign-up on a serving instance.
const CONFLICT_RETRIES: usize = 5;

/// How a run ended, for the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Complete,
    /// Ctrl-C: every batch written is whole.
    Interrupted,
    /// `--on-conflict fail` met a conflict.
    Conflict,
}

/// The counts an import ends with.
#[derive(Debug, Default)]
struct Counts {
    read: u64,
    imported: u64,
    already: u64,
    skipped: BTreeMap<SkipReason, u64>,
}

impl Counts {
    fn skipped(&self) -> u64 {
        self.skipped.values().sum()
    }

    fn status(&self, dry_run: bool) -> String {
        let verb = if dry_run { "would import" } else { "imported" };
        format!(
            "{} read, {} {verb}, {} already there, {} skipped",
            self.read,
            self.imported,
            self.already,
            self.skipped()
        )
    }
}

/// One batch as read, and how far into the input it ends.
struct Batch {
    records: Vec<SourceRecord>,
    bytes: u64,
}

pub async fn import(config: ImportConfig, store: Arc<dyn Store>) -> anyhow::Result<Ended> {
    let (input, size): (Box<dyn Read + Send>, Option<u64>) = if config.file == Path::new("-") {
        (Box::new(std::io::stdin()), None)
    } else {
        let file = File::open(&config.file)
            .with_context(|| format!("opening {}", config.file.display()))?;
        let size = file.metadata().ok().map(|m| m.len());
        (Box::new(file), size)
    };
    // The report names accounts (usernames, e-mails): its owner's only.
    let mut report = csv::Writer::from_writer(create_private(&config.report)?);
    report.write_record(["line", "key", "reason", "detail"])?;

    let (sender, mut batches) = tokio::sync::mpsc::channel::<Batch>(READ_AHEAD);
    let (format, model, batch_size) = (
        config.format,
        config.django_model.clone(),
        config.batch_size as usize,
    );
    let reader = std::thread::spawn(move || -> anyhow::Result<()> {
        let mut batch = Vec::with_capacity(batch_size);
        let mut position = 0;
        read_records(format, &model, input, |record, bytes| {
            batch.push(record);
            position = bytes;
            if batch.len() < batch_size {
                return true;
            }
            let full = std::mem::replace(&mut batch, Vec::with_capacity(batch_size));
            sender
                .blocking_send(Batch {
                    records: full,
                    bytes,
                })
                .is_ok()
        })?;
        if !batch.is_empty() {
            let _ = sender.blocking_send(Batch {
                records: batch,
                bytes: position,
            });
        }
        Ok(())
    });

    let rules = SignUpRules::new(config.phone_region.as_deref());
    let mut counts = Counts::default();
    let mut progress = Progress::new("import", size, true);
    let mut seen = Seen::default();
    let interrupt = tokio::signal::ctrl_c();
    tokio::pin!(interrupt);
    let mut ended = Ended::Complete;
    loop {
        // The interrupt first: Ctrl-C on a pipeline also ends the input,
        // and a run cut short that way is not complete.
        let batch = tokio::select! {
            biased;
            _ = &mut interrupt => {
                ended = Ended::Interrupted;
                None
            }
            batch = batches.recv() => batch,
        };
        let Some(batch) = batch else {
            if ended == Ended::Complete && futures_ready(&mut interrupt).await {
                ended = Ended::Interrupted;
            }
            break;
        };
        let written =
            import_batch(&config, store.as_ref(), &rules, batch.records, &mut seen).await?;
        counts.read += written.read;
        counts.imported += written.imported;
        counts.already += written.already;
        for (line, key, skip) in &written.skipped {
            *counts.skipped.entry(skip.reason).or_default() += 1;
            report.write_record([&line.to_string(), key, skip.reason.as_str(), &skip.detail])?;
        }
        report.flush()?;
        progress.update(counts.read, batch.bytes, &counts.status(config.dry_run));
        if written.conflict {
            ended = Ended::Conflict;
            break;
        }
        // Ctrl-C during the write: that batch is whole; stop now.
        if futures_ready(&mut interrupt).await {
            ended = Ended::Interrupted;
            break;
        }
    }
    drop(batches);
    progress.finish();
    report.flush()?;
    // An interrupted reader may be blocked on its input (a pipe nobody
    // writes to): leave it to the process's exit.
    let read_result = match ended {
        Ended::Interrupted => Ok(()),
        _ => reader
            .join()
            .map_err(|_| anyhow::anyhow!("the reader thread panicked"))?,
    };
    print_summary(&config, &counts, ended);
    read_result.map(|()| ended)
}

/// Whether Ctrl-C came meanwhile, without waiting for it.
async fn futures_ready<F: std::future::Future + Unpin>(f: &mut F) -> bool {
    tokio::select! {
        biased;
        _ = f => true,
        () = std::future::ready(()) => false,
    }
}

fn print_summary(config: &ImportConfig, counts: &Counts, ended: Ended) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "read: {}", counts.read);
    let verb = if config.dry_run {
        "would import"
    } else {
        "imported"
    };
    let _ = writeln!(out, "{verb}: {}", counts.imported);
    let _ = writeln!(out, "already imported: {}", counts.already);
    let _ = writeln!(out, "skipped: {}", counts.skipped());
    for (reason, n) in &counts.skipped {
        let _ = writeln!(out, "  {}: {n}", reason.as_str());
    }
    let _ = writeln!(out, "report: {}", config.report.display());
    match ended {
        Ended::Complete => {}
        Ended::Interrupted => {
            let _ = writeln!(
                out,
                "interrupted: every batch written is whole; run again to resume"
            );
        }
        Ended::Conflict => {
            let _ = writeln!(out, "stopped at the first conflict (--on-conflict fail)");
        }
    }
}

/// What one batch came to.
#[derive(Default)]
struct BatchOutcome {
    read: u64,
    imported: u64,
    already: u64,
    skipped: Vec<(u64, String, Skip)>,
    conflict: bool,
}

async fn import_batch(
    config: &ImportConfig,
    store: &dyn Store,
    rules: &SignUpRules,
    records: Vec<SourceRecord>,
    seen: &mut Seen,
) -> anyhow::Result<BatchOutcome> {
    let now = Utc::now();
    let lines: Vec<u64> = records.iter().map(|r| r.line).collect();
    let mut invalid = Vec::new();
    // The valid users and where each came from, side by side: the planner
    // and the store take the users as one slice.
    let mut users: Vec<ImportedUser> = Vec::with_capacity(records.len());
    let mut origins: Vec<(u64, String)> = Vec::with_capacity(records.len());
    for record in records {
        match record.account.and_then(|a| a.validate(rules, now)) {
            Ok(user) => {
                users.push(user);
                origins.push((record.line, record.key));
            }
            Err(skip) => invalid.push((record.line, record.key, skip)),
        }
    }
    for _ in 0..CONFLICT_RETRIES {
        let (keys, ids, car_ids) = lookup_keys(&users);
        let existing = store.existing(&keys, &ids, &car_ids).await?;
        // A dry run writes nothing, so what it took must be remembered; a
        // real run finds its earlier batches in the database.
        let mut fresh = Seen::default();
        let seen = if config.dry_run {
            &mut *seen
        } else {
            &mut fresh
        };
        let decisions = plan_batch(&users, &existing, seen);
        let mut outcome = BatchOutcome {
            skipped: invalid.clone(),
            ..BatchOutcome::default()
        };
        let mut take = Vec::new();
        let mut stop_at = None;
        for (((line, key), user), decision) in origins.iter().zip(&users).zip(decisions) {
            match decision {
                Ok(()) => take.push(user),
                Err(skip) if skip.reason == SkipReason::AlreadyImported => outcome.already += 1,
                Err(skip) => {
                    let stop = config.on_conflict == OnConflict::Fail && skip.reason.is_conflict();
                    outcome.skipped.push((*line, key.clone(), skip));
                    if stop {
                        stop_at = Some(*line);
                        break;
                    }
                }
            }
        }
        outcome.skipped.sort_by_key(|(line, _, _)| *line);
        // What lies past a conflict that stops the run is not taken up.
        let last = stop_at.unwrap_or(u64::MAX);
        outcome.skipped.retain(|(line, _, _)| *line <= last);
        outcome.read = lines.iter().filter(|l| **l <= last).count() as u64;
        outcome.conflict = stop_at.is_some();
        outcome.imported = take.len() as u64;
        if config.dry_run || take.is_empty() {
            return Ok(outcome);
        }
        match store.import_users(&take).await {
            Ok(_) => {
                let detail = format!("{}: {} users", config.format.name(), take.len());
                store
                    .record_event(&SecurityEvent {
                        at: Utc::now(),
                        kind: EventKind::UsersImported,
                        user_id: None,
                        client_addr: None,
                        detail: Some(detail),
                    })
                    .await?;
                return Ok(outcome);
            }
            // A sign-up took a key between the look-up and the write:
            // decide again.
            Err(StoreError::Conflict) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    anyhow::bail!("a batch kept conflicting with concurrent sign-ups; run the import again")
}

/// Writes every user as one JSON line, in id order, page by page.
pub async fn export(config: ExportConfig, store: Arc<dyn Store>) -> anyhow::Result<Ended> {
    let total = store.count_users().await?;
    let partial = config.out.as_ref().map(|out| {
        let mut name = out.as_os_str().to_owned();
        name.push(".partial");
        std::path::PathBuf::from(name)
    });
    let sink: Box<dyn Write> = match &partial {
        Some(path) => Box::new(create_private(path)?),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut sink = BufWriter::new(sink);
    let mut progress = Progress::new("export", u64::try_from(total).ok(), false);
    let interrupt = tokio::signal::ctrl_c();
    tokio::pin!(interrupt);
    let (mut after, mut written) = (0i64, 0u64);
    let mut ended = Ended::Complete;
    loop {
        if futures_ready(&mut interrupt).await {
            ended = Ended::Interrupted;
            break;
        }
        let page = store.export_users(after, EXPORT_PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.user.id;
        for user in page {
            serde_json::to_writer(&mut sink, &jsonl::JsonlUser::from(user))?;
            sink.write_all(b"\n")?;
            written += 1;
        }
        progress.update(written, written, &format!("{written} users"));
    }
    sink.flush()?;
    drop(sink);
    progress.finish();
    if let (Some(partial), Some(out), Ended::Complete) = (&partial, &config.out, ended) {
        std::fs::rename(partial, out)
            .with_context(|| format!("renaming {} to {}", partial.display(), out.display()))?;
    }
    eprintln!("exported: {written} users");
    if ended == Ended::Interrupted {
        eprintln!("interrupted: the export is incomplete");
    }
    Ok(ended)
}

/// A new file only its owner may read (an export holds password hashes):
/// whatever was at `path` is removed first, and the file is created anew,
/// never opened through a link someone planted there.
fn create_private(path: &Path) -> anyhow::Result<File> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))
}

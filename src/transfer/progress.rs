//! Progress of an import or export on standard error: a bar with the rate
//! and ETA on a terminal, a plain line every few seconds otherwise (logs,
//! CI), and nothing on stdout, which may carry the data.

use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

const PLAIN_EVERY: Duration = Duration::from_secs(5);

pub struct Progress {
    what: &'static str,
    bar: Option<ProgressBar>,
    started: Instant,
    last_plain: Instant,
}

impl Progress {
    /// `total`: the bar's length in `unit`s (bytes of the input, users to
    /// export), when known.
    pub fn new(what: &'static str, total: Option<u64>, in_bytes: bool) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = match total {
                Some(total) => {
                    ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
                }
                None => ProgressBar::new_spinner(),
            };
            let position = if in_bytes {
                "{bytes}/{total_bytes}"
            } else {
                "{pos}/{len}"
            };
            let template = match total {
                Some(_) => {
                    format!("{{spinner}} {what} [{{bar:30}}] {position} {{msg}} ETA {{eta}}")
                }
                None => format!("{{spinner}} {what} {{msg}}"),
            };
            if let Ok(style) = ProgressStyle::with_template(&template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        let now = Instant::now();
        Self {
            what,
            bar,
            started: now,
            last_plain: now,
        }
    }

    /// `records` done so far, `position` in the bar's unit, `status` the
    /// counts to show.
    pub fn update(&mut self, records: u64, position: u64, status: &str) {
        let rate = records as f64 / self.started.elapsed().as_secs_f64().max(1e-3);
        let message = format!("{status} ({rate:.0} records/s)");
        match &self.bar {
            Some(bar) => {
                bar.set_position(position);
                bar.set_message(message);
            }
            None if self.last_plain.elapsed() >= PLAIN_EVERY => {
                self.last_plain = Instant::now();
                eprintln!("{}: {message}", self.what);
            }
            None => {}
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

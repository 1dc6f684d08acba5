//! A real SMTP server for the mail tests: `scripts/smtp-sink` (aiosmtpd)
//! in a child process on a loopback port, saving every message it
//! accepts to a folder the tests read. It can be stopped and started again
//! on the same port (an outage), and told to answer 451 or 550.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde::Deserialize;

/// One message the server accepted, decoded by Python's `email` package.
#[derive(Debug, Clone, Deserialize)]
pub struct Mail {
    pub from: String,
    pub to: Vec<String>,
    pub subject: String,
    pub text: Option<String>,
    pub html: Option<String>,
}

impl Mail {
    pub fn text(&self) -> &str {
        self.text.as_deref().unwrap_or_default()
    }

    /// The `token` parameter of the link in the text part.
    pub fn token(&self) -> String {
        let text = self.text();
        let start = text.find("token=").expect("a link with a token") + "token=".len();
        text[start..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect()
    }

    /// The 8-digit code of a sign-in code mail.
    pub fn code(&self) -> String {
        self.text()
            .split_whitespace()
            .find(|word| word.len() == 8 && word.bytes().all(|b| b.is_ascii_digit()))
            .expect("an 8-digit code")
            .to_owned()
    }
}

pub struct SmtpSink {
    dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
}

fn python() -> String {
    std::env::var("AUTHQL_TEST_SMTP_PYTHON").unwrap_or_else(|_| "/usr/bin/python3".into())
}

impl SmtpSink {
    /// A running server, or `None` (said loudly) where aiosmtpd is not
    /// installed; with `AUTHQL_TEST_REQUIRE_SMTP=1` (CI) that fails instead.
    pub fn start() -> Option<Self> {
        let available = Command::new(python())
            .args(["-c", "import aiosmtpd"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !available {
            assert!(
                std::env::var("AUTHQL_TEST_REQUIRE_SMTP").as_deref() != Ok("1"),
                "AUTHQL_TEST_REQUIRE_SMTP=1 but {} cannot import aiosmtpd \
                 (apt-get install python3-aiosmtpd)",
                python()
            );
            eprintln!("SKIPPED (SMTP): aiosmtpd is not installed; run scripts/test");
            return None;
        }
        let dir = tempfile::tempdir().expect("mail dir");
        let (child, port) = spawn(dir.path(), 0);
        Some(Self {
            dir,
            port,
            child: Some(child),
        })
    }

    /// `AUTHQL_SMTP_URL` for it (plain text: it offers no STARTTLS).
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}?tls=none", self.port)
    }

    /// Stops the server: connections are refused until [`Self::resume`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port.
    pub fn resume(&mut self) {
        self.stop();
        let (child, _) = spawn(self.dir.path(), self.port);
        self.child = Some(child);
    }

    /// `451` or `550` answers every recipient so; `""` accepts again.
    pub fn answer(&self, mode: &str) {
        std::fs::write(self.dir.path().join("mode"), mode).expect("mode");
    }

    /// Every message accepted so far, in order.
    pub fn mails(&self) -> Vec<Mail> {
        let mut names: Vec<_> = std::fs::read_dir(self.dir.path())
            .expect("read dir")
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        names.sort();
        names
            .iter()
            .map(|p| serde_json::from_slice(&std::fs::read(p).expect("read")).expect("mail json"))
            .collect()
    }

    /// Waits (up to 30 s) until at least `n` messages arrived.
    pub async fn wait_for(&self, n: usize) -> Vec<Mail> {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let mails = self.mails();
            if mails.len() >= n {
                return mails;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{} of {n} mails arrived: {mails:?}",
                mails.len()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits for the first (next) message to `to` whose subject contains `subject`.
    pub async fn wait_for_mail(&self, to: &str, subject: &str) -> Mail {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(mail) = self
                .mails()
                .into_iter()
                .rev()
                .find(|m| m.to.iter().any(|t| t == to) && m.subject.contains(subject))
            {
                return mail;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no mail to {to} about {subject:?}: {:?}",
                self.mails()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits (up to 30 s) for the `n`-th message (from 1) to `to` whose
    /// subject contains `subject`.
    pub async fn wait_for_nth(&self, to: &str, subject: &str, n: usize) -> Mail {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let mut found: Vec<Mail> = self
                .mails_to(to)
                .into_iter()
                .filter(|m| m.subject.contains(subject))
                .collect();
            if found.len() >= n {
                return found.swap_remove(n - 1);
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{} of {n} mails to {to} about {subject:?}",
                found.len()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Messages to `to`.
    pub fn mails_to(&self, to: &str) -> Vec<Mail> {
        self.mails()
            .into_iter()
            .filter(|m| m.to.iter().any(|t| t == to))
            .collect()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spawn(dir: &std::path::Path, port: u16) -> (Child, u16) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/smtp-sink");
    let mut child = Command::new(python())
        .arg(script)
        .arg("--dir")
        .arg(dir)
        .arg("--port")
        .arg(port.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("smtp-sink starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("smtp-sink says where it listens");
    let port = line
        .trim()
        .strip_prefix("listening ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("smtp-sink did not start: {line:?}"));
    (child, port)
}

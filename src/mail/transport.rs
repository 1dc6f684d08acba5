//! Where mail goes: an SMTP server (`AUTHQL_SMTP_URL`), or, with none
//! configured, `.eml` files in a folder (`AUTHQL_MAIL_DIR`) so that a
//! laptop walks every flow without one.

use std::path::PathBuf;
use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::domain::mail::DeliveryFailure;

/// How long one SMTP command may take (well under the sender's lease).
const SMTP_TIMEOUT: Duration = Duration::from_secs(30);

/// A failed delivery: what kind, and why (for the outbox row and the log;
/// never the mail's content).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryError {
    pub failure: DeliveryFailure,
    pub reason: String,
}

pub enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Files {
        folder: PathBuf,
        files: AsyncFileTransport<Tokio1Executor>,
    },
}

/// The URL lettre is given for `AUTHQL_SMTP_URL`: `smtps://` is TLS from
/// the first byte; `smtp://` requires STARTTLS unless its `tls` parameter
/// says `opportunistic` (when offered) or `none` (plain text, for a relay
/// on the same host). Credentials may be in the URL (`user:password@`).
pub fn lettre_url(url: &str) -> Result<String, String> {
    let mut parsed = url::Url::parse(url.trim()).map_err(|e| format!("not a URL: {e}"))?;
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("the URL names no host".into());
    }
    let tls = parsed
        .query_pairs()
        .find(|(key, _)| key == "tls")
        .map(|(_, value)| value.into_owned());
    let others: Vec<(String, String)> = parsed
        .query_pairs()
        .filter(|(key, _)| key != "tls")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if !others.is_empty() {
        return Err(format!("unknown parameter {:?}", others[0].0));
    }
    let tls = match (parsed.scheme(), tls.as_deref()) {
        ("smtps", None) => None,
        ("smtp", None | Some("required")) => Some("required"),
        ("smtp", Some("opportunistic")) => Some("opportunistic"),
        ("smtp", Some("none")) => None,
        ("smtp" | "smtps", Some(other)) => {
            return Err(format!(
                "tls={other}: use required, opportunistic or none (smtp://) or nothing (smtps://)"
            ))
        }
        (scheme, _) => return Err(format!("scheme {scheme}: use smtp:// or smtps://")),
    };
    parsed.set_query(None);
    if let Some(tls) = tls {
        parsed.query_pairs_mut().append_pair("tls", tls);
    }
    Ok(parsed.to_string())
}

impl Transport {
    pub fn smtp(url: &str) -> anyhow::Result<Self> {
        let url = lettre_url(url).map_err(|e| anyhow::anyhow!("AUTHQL_SMTP_URL: {e}"))?;
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(&url)
            .map_err(|e| anyhow::anyhow!("AUTHQL_SMTP_URL: {e}"))?
            .timeout(Some(SMTP_TIMEOUT))
            .build();
        Ok(Transport::Smtp(transport))
    }

    /// Writes mails as `<uuid>.eml` into `folder` (created `0700`).
    pub fn files(folder: PathBuf) -> anyhow::Result<Self> {
        create_private_dir(&folder)?;
        Ok(Transport::Files {
            files: AsyncFileTransport::<Tokio1Executor>::new(&folder),
            folder,
        })
    }

    pub fn is_files(&self) -> bool {
        matches!(self, Transport::Files { .. })
    }

    /// Hands one mail over. `Ok` with where it went (for the log).
    pub async fn send(&self, message: Message) -> Result<String, DeliveryError> {
        match self {
            Transport::Smtp(smtp) => match smtp.send(message).await {
                Ok(response) => Ok(format!("smtp {}", response.code())),
                Err(e) => Err(DeliveryError {
                    // A 5xx answer will not change; anything else (4xx,
                    // refused, timed out, TLS) may.
                    failure: if e.is_permanent() {
                        DeliveryFailure::Permanent
                    } else {
                        DeliveryFailure::Transient
                    },
                    reason: e.to_string(),
                }),
            },
            Transport::Files { files, folder } => match files.send(message).await {
                Ok(id) => Ok(folder.join(format!("{id}.eml")).display().to_string()),
                Err(e) => Err(DeliveryError {
                    failure: DeliveryFailure::Transient,
                    reason: e.to_string(),
                }),
            },
        }
    }
}

/// The message for `to`, plain text and HTML as alternatives.
pub fn message(
    from: &Mailbox,
    to: &str,
    subject: &str,
    text: String,
    html: String,
) -> Result<Message, DeliveryError> {
    let permanent = |reason: String| DeliveryError {
        failure: DeliveryFailure::Permanent,
        reason,
    };
    let to: Mailbox = to
        .parse()
        .map_err(|e| permanent(format!("recipient: {e}")))?;
    Message::builder()
        .from(from.clone())
        .to(to)
        .subject(subject)
        .multipart(MultiPart::alternative_plain_html(text, html))
        .map_err(|e| permanent(format!("message: {e}")))
}

#[cfg(unix)]
fn create_private_dir(path: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    if path.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|e| anyhow::anyhow!("cannot create mail folder {}: {e}", path.display()))
}

#[cfg(not(unix))]
fn create_private_dir(path: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(path)
        .map_err(|e| anyhow::anyhow!("cannot create mail folder {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::lettre_url;

    #[test]
    fn starttls_is_required_unless_the_url_says_otherwise() {
        assert_eq!(
            lettre_url("smtp://mail.example.com:587").as_deref(),
            Ok("smtp://mail.example.com:587?tls=required")
        );
        assert_eq!(
            lettre_url("smtp://u:p%40ss@mail.example.com?tls=opportunistic").as_deref(),
            Ok("smtp://u:p%40ss@mail.example.com?tls=opportunistic")
        );
        assert_eq!(
            lettre_url("smtp://127.0.0.1:2525?tls=none").as_deref(),
            Ok("smtp://127.0.0.1:2525")
        );
        assert_eq!(
            lettre_url("smtps://mail.example.com").as_deref(),
            Ok("smtps://mail.example.com")
        );
        assert!(lettre_url("smtps://mail.example.com?tls=none").is_err());
        assert!(lettre_url("http://mail.example.com").is_err());
        assert!(lettre_url("smtp://mail.example.com?tls=maybe").is_err());
        assert!(lettre_url("smtp://mail.example.com?pool=1").is_err());
        assert!(lettre_url("not a url").is_err());
    }
}

//! Sending mail: templates ([`templates`]), the way out ([`transport`]),
//! and the background sender that drains the outbox ([`sender`]). The
//! services decide what to send; [`Mailer`] renders it for the outbox.

pub mod sender;
pub mod templates;
pub mod transport;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::domain::mail::{MailKind, MailLinks, OutgoingMail, TokenLifetimes, TokenPurpose};
pub use sender::{MailSender, SenderSettings};
pub use templates::{MailContext, MailTemplates};
pub use transport::Transport;

/// Renders mails for the outbox and wakes this instance's sender when one
/// was queued.
pub struct Mailer {
    templates: MailTemplates,
    links: MailLinks,
    lifetimes: TokenLifetimes,
    wake: Arc<Notify>,
}

/// What goes into one mail besides its kind and recipient.
#[derive(Debug, Clone, Default)]
pub struct MailFacts<'a> {
    pub username: &'a str,
    /// A link token, or a sign-in code.
    pub secret: Option<&'a str>,
    /// For the e-mail change notice.
    pub new_email: Option<&'a str>,
}

impl Mailer {
    pub fn new(templates: MailTemplates, links: MailLinks, lifetimes: TokenLifetimes) -> Self {
        Self {
            templates,
            links,
            lifetimes,
            wake: Arc::new(Notify::new()),
        }
    }

    pub fn lifetimes(&self) -> &TokenLifetimes {
        &self.lifetimes
    }

    /// The handle the sender waits on (it stops once every clone is gone).
    pub fn wake_handle(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Tells this instance's sender that mail is waiting (other instances
    /// find it at their next poll).
    pub fn queued(&self) {
        self.wake.notify_one();
    }

    pub fn compose(
        &self,
        kind: MailKind,
        to: &str,
        facts: &MailFacts<'_>,
    ) -> anyhow::Result<OutgoingMail> {
        let secret = facts.secret.unwrap_or_default();
        let (link, code, valid_for) = match kind {
            MailKind::VerifyEmail => (
                Some(self.links.for_token(kind, secret)),
                "",
                Some(TokenPurpose::VerifyEmail),
            ),
            MailKind::ResetPassword => (
                Some(self.links.for_token(kind, secret)),
                "",
                Some(TokenPurpose::ResetPassword),
            ),
            MailKind::ConfirmEmailChange => (
                Some(self.links.for_token(kind, secret)),
                "",
                Some(TokenPurpose::ChangeEmail),
            ),
            MailKind::SignInCode => (
                Some(self.links.sign_in(to, secret)),
                secret,
                Some(TokenPurpose::SignInCode),
            ),
            MailKind::EmailChangeNotice => (None, "", None),
        };
        let rendered = self.templates.render(
            kind,
            &MailContext {
                username: facts.username.to_owned(),
                email: to.to_owned(),
                new_email: facts.new_email.unwrap_or_default().to_owned(),
                link: link.clone().unwrap_or_default(),
                code: code.to_owned(),
                valid_for: valid_for
                    .map(|p| for_people(self.lifetimes.of(p)))
                    .unwrap_or_default(),
            },
        )?;
        Ok(OutgoingMail {
            kind,
            to: to.to_owned(),
            subject: rendered.subject,
            text: rendered.text,
            html: rendered.html,
            link,
        })
    }
}

/// `3600s` -> "1 hour", `600s` -> "10 minutes".
fn for_people(d: Duration) -> String {
    let secs = d.as_secs();
    let (n, unit) = match secs {
        s if s >= 86_400 && s % 86_400 == 0 => (s / 86_400, "day"),
        s if s >= 3600 && s % 3600 == 0 => (s / 3600, "hour"),
        s if s >= 60 && s % 60 == 0 => (s / 60, "minute"),
        s => (s, "second"),
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    use super::for_people;
    use std::time::Duration;

    #[test]
    fn lifetimes_read_naturally() {
        assert_eq!(for_people(Duration::from_secs(3600)), "1 hour");
        assert_eq!(for_people(Duration::from_secs(600)), "10 minutes");
        assert_eq!(for_people(Duration::from_secs(2 * 86_400)), "2 days");
        assert_eq!(for_people(Duration::from_secs(90)), "90 seconds");
    }
}

//! Mail templates: `<kind>.subject`, `<kind>.txt` and `<kind>.html` for
//! every [`MailKind`], compiled into the binary from `assets/mail/`. A
//! folder given by `AUTHQL_MAIL_TEMPLATES` may replace any of them; every
//! template is rendered once at start, so a broken one stops the start,
//! not a mail.

use std::path::Path;

use anyhow::Context as _;
use minijinja::Environment;
use serde::Serialize;

use crate::domain::mail::MailKind;

/// What a template may use. Every field is text; absent ones are empty.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MailContext {
    pub username: String,
    /// The address the mail goes to.
    pub email: String,
    /// For the notice of an e-mail change: the address asked for.
    pub new_email: String,
    pub link: String,
    pub code: String,
    /// How long the link or code works, e.g. "1 hour".
    pub valid_for: String,
}

/// A rendered mail.
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

pub struct MailTemplates {
    env: Environment<'static>,
}

const PARTS: [&str; 3] = ["subject", "txt", "html"];

fn builtin(kind: MailKind, part: &str) -> &'static str {
    macro_rules! parts {
        ($name:literal) => {
            match part {
                "subject" => include_str!(concat!("../../assets/mail/", $name, ".subject")),
                "txt" => include_str!(concat!("../../assets/mail/", $name, ".txt")),
                _ => include_str!(concat!("../../assets/mail/", $name, ".html")),
            }
        };
    }
    match kind {
        MailKind::VerifyEmail => parts!("verify_email"),
        MailKind::ResetPassword => parts!("reset_password"),
        MailKind::ConfirmEmailChange => parts!("confirm_email_change"),
        MailKind::EmailChangeNotice => parts!("email_change_notice"),
        MailKind::SignInCode => parts!("sign_in_code"),
    }
}

impl MailTemplates {
    /// The built-in templates, each replaced by `<folder>/<kind>.<part>`
    /// where that file exists.
    pub fn load(folder: Option<&Path>) -> anyhow::Result<Self> {
        let mut env = Environment::new();
        for kind in MailKind::ALL {
            for part in PARTS {
                let name = format!("{}.{part}", kind.name());
                let source = match folder.map(|f| f.join(&name)).filter(|p| p.is_file()) {
                    Some(path) => std::fs::read_to_string(&path)
                        .with_context(|| format!("reading mail template {}", path.display()))?,
                    None => builtin(kind, part).to_owned(),
                };
                env.add_template_owned(name.clone(), source)
                    .with_context(|| format!("mail template {name}"))?;
            }
        }
        let templates = Self { env };
        let sample = MailContext {
            username: "ivan".into(),
            email: "ivan@example.com".into(),
            new_email: "ivan@example.org".into(),
            link: "https://app.example.com/page?token=t".into(),
            code: "01234567".into(),
            valid_for: "1 hour".into(),
        };
        for kind in MailKind::ALL {
            templates
                .render(kind, &sample)
                .with_context(|| format!("mail templates of {}", kind.name()))?;
        }
        Ok(templates)
    }

    /// Renders the three parts (HTML auto-escaped, the subject on one line).
    pub fn render(&self, kind: MailKind, context: &MailContext) -> anyhow::Result<Rendered> {
        let part = |part: &str| -> anyhow::Result<String> {
            let name = format!("{}.{part}", kind.name());
            Ok(self.env.get_template(&name)?.render(context)?)
        };
        let subject = part("subject")?
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        Ok(Rendered {
            subject,
            text: part("txt")?,
            html: part("html")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_templates_render_and_html_is_escaped() {
        let templates = MailTemplates::load(None).expect("templates");
        let context = MailContext {
            username: "<b>ivan</b>".into(),
            link: "https://app.example.com/reset-password?token=abc".into(),
            valid_for: "1 hour".into(),
            ..MailContext::default()
        };
        let mail = templates
            .render(MailKind::ResetPassword, &context)
            .expect("render");
        assert_eq!(mail.subject, "Reset your password");
        assert!(mail.text.contains("token=abc"), "{}", mail.text);
        assert!(mail.text.contains("<b>ivan</b>"));
        assert!(mail.html.contains("&lt;b&gt;ivan"), "{}", mail.html);
        assert!(!mail.html.contains("<b>ivan"), "{}", mail.html);
    }

    #[test]
    fn a_folder_replaces_single_templates_and_broken_ones_stop_the_start() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(
            dir.path().join("verify_email.subject"),
            "Hi {{ username }}\n",
        )
        .expect("write");
        let templates = MailTemplates::load(Some(dir.path())).expect("templates");
        let context = MailContext {
            username: "ivan".into(),
            ..MailContext::default()
        };
        let mail = templates
            .render(MailKind::VerifyEmail, &context)
            .expect("render");
        assert_eq!(mail.subject, "Hi ivan");
        assert!(mail.text.contains("confirm"), "the built-in body stays");
        std::fs::write(dir.path().join("sign_in_code.txt"), "{% if %}").expect("write");
        assert!(MailTemplates::load(Some(dir.path())).is_err());
    }
}

//! Readers of the formats `authql import` takes, each turning a stream of
//! bytes into [`SourceRecord`]s one at a time: the mapping from each
//! system's fields to authql's is here and nowhere else.

use std::io::{BufRead, BufReader, Read};

use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::Value;

use super::json_stream::{for_each_element, ArrayAt};
use super::jsonl::JsonlUser;
use crate::config::ImportFormat;
use crate::domain::import::{report_key, Skip, SkipReason, SourceAccount};
use crate::domain::password_hash::StoredHash;

/// The longest line of a JSON-lines file a record may take.
const MAX_LINE_BYTES: u64 = 1 << 20;

/// One record as read: where it is, what the report calls it, and the
/// account or why it could not be read.
#[derive(Debug)]
pub struct SourceRecord {
    pub line: u64,
    pub key: String,
    pub account: Result<SourceAccount, Skip>,
}

/// Reads every record of `input` in `format`, calling `each(record,
/// bytes_read)` until it returns false.
pub fn read_records(
    format: ImportFormat,
    django_model: &str,
    input: impl Read,
    mut each: impl FnMut(SourceRecord, u64) -> bool,
) -> anyhow::Result<()> {
    let mut input = BufReader::with_capacity(1 << 16, input);
    match format {
        ImportFormat::Django => {
            let first = input
                .fill_buf()?
                .iter()
                .find(|b| !b.is_ascii_whitespace())
                .copied();
            if first == Some(b'[') {
                for_each_element(input, ArrayAt::TopLevel, |value, line, bytes| {
                    each(django_record(value, line, django_model), bytes)
                })
            } else {
                // `dumpdata --format jsonl`.
                json_lines(input, |value, line, bytes| {
                    let record = match value {
                        Ok(value) => django_record(value, line, django_model),
                        Err(skip) => unreadable(line, skip),
                    };
                    each(record, bytes)
                })
            }
        }
        ImportFormat::Keycloak => {
            for_each_element(input, ArrayAt::Key("users"), |value, line, bytes| {
                each(keycloak_record(&value, line), bytes)
            })
        }
        ImportFormat::Jsonl => json_lines(input, |value, line, bytes| {
            let record = match value {
                Ok(value) => jsonl_record(value, line),
                Err(skip) => unreadable(line, skip),
            };
            each(record, bytes)
        }),
        ImportFormat::Supabase => supabase(input, each),
    }
}

fn unreadable(line: u64, skip: Skip) -> SourceRecord {
    SourceRecord {
        line,
        key: String::new(),
        account: Err(skip),
    }
}

/// One JSON value per line; blank lines are passed over.
fn json_lines(
    mut input: impl BufRead,
    mut each: impl FnMut(Result<Value, Skip>, u64, u64) -> bool,
) -> anyhow::Result<()> {
    let (mut line, mut bytes) = (0u64, 0u64);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = (&mut input)
            .take(MAX_LINE_BYTES + 1)
            .read_until(b'\n', &mut buf)?;
        if n == 0 {
            return Ok(());
        }
        line += 1;
        bytes += n as u64;
        let value = if buf.last() != Some(&b'\n') && n as u64 > MAX_LINE_BYTES {
            // Pass over the rest of the over-long line.
            loop {
                let rest = input.fill_buf()?;
                if rest.is_empty() {
                    break;
                }
                match rest.iter().position(|b| *b == b'\n') {
                    Some(at) => {
                        input.consume(at + 1);
                        bytes += at as u64 + 1;
                        break;
                    }
                    None => {
                        let len = rest.len();
                        input.consume(len);
                        bytes += len as u64;
                    }
                }
            }
            Err(Skip::new(
                SkipReason::Malformed,
                "the line is longer than 1 MiB",
            ))
        } else if buf.iter().all(u8::is_ascii_whitespace) {
            continue;
        } else {
            serde_json::from_slice(&buf)
                .map_err(|e| Skip::new(SkipReason::Malformed, format!("not JSON: {e}")))
        };
        if !each(value, line, bytes) {
            return Ok(());
        }
    }
}

fn text(value: &Value, key: &str) -> Option<String> {
    value
        .get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// An ISO 8601 time as Django, PostgreSQL or a person writes it; one
/// without an offset is UTC (Django with `USE_TZ = False`).
pub fn parse_time(raw: &str) -> Option<DateTime<Utc>> {
    let raw = raw.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Some(t.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M:%S%.f%#z"] {
        if let Ok(t) = DateTime::parse_from_str(raw, format) {
            return Some(t.with_timezone(&Utc));
        }
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(raw, format) {
            return Some(t.and_utc());
        }
    }
    None
}

/// A time field: absent or empty is `None`; present but unreadable skips
/// the record (a guess would change it).
pub(super) fn time(value: Option<&str>, field: &str) -> Result<Option<DateTime<Utc>>, Skip> {
    match value.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(raw) => parse_time(raw).map(Some).ok_or_else(|| {
            Skip::new(
                SkipReason::Malformed,
                format!("{field} is not a time: {raw}"),
            )
        }),
    }
}

/// `{"model": "auth.user", "pk": 1, "fields": {...}}`.
fn django_record(value: Value, line: u64, model: &str) -> SourceRecord {
    let fields = &value["fields"];
    let username = text(fields, "username").unwrap_or_default();
    let email = text(fields, "email");
    let key = match report_key(&username, email.as_deref()) {
        k if k.is_empty() => value["pk"].to_string(),
        k => k,
    };
    let account = (|| {
        let label = value["model"].as_str().unwrap_or_default();
        if !label.eq_ignore_ascii_case(model) {
            return Err(Skip::new(
                SkipReason::OtherModel,
                format!("a record of {label}, not of {model}"),
            ));
        }
        if !fields.is_object() {
            return Err(Skip::new(SkipReason::Malformed, "no fields"));
        }
        let created_at = time(fields["date_joined"].as_str(), "date_joined")?;
        let active = fields["is_active"].as_bool().unwrap_or(true);
        Ok(SourceAccount {
            username: username.clone(),
            email: email.clone(),
            phone: text(fields, "phone").or_else(|| text(fields, "phone_number")),
            name: text(fields, "first_name"),
            surname: text(fields, "last_name"),
            password_hash: Some(StoredHash::from_django(
                fields["password"].as_str().unwrap_or_default(),
            )),
            created_at,
            disabled_at: (!active).then(|| created_at.unwrap_or_else(Utc::now)),
            ..SourceAccount::default()
        })
    })();
    SourceRecord { line, key, account }
}

/// One of `users[]` of a realm export.
fn keycloak_record(user: &Value, line: u64) -> SourceRecord {
    let username = text(user, "username").unwrap_or_default();
    let email = text(user, "email");
    let key = report_key(&username, email.as_deref());
    let account = (|| {
        let created_at = user["createdTimestamp"]
            .as_i64()
            .and_then(DateTime::from_timestamp_millis);
        let attribute = |name: &str| {
            user["attributes"][name][0]
                .as_str()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let enabled = user["enabled"].as_bool().unwrap_or(true);
        let verified = user["emailVerified"].as_bool().unwrap_or(false);
        Ok(SourceAccount {
            username: username.clone(),
            email: email.clone(),
            email_verified_at: verified.then(|| created_at.unwrap_or_else(Utc::now)),
            phone: attribute("phone")
                .or_else(|| attribute("phoneNumber"))
                .or_else(|| attribute("phone_number")),
            name: text(user, "firstName"),
            surname: text(user, "lastName"),
            password_hash: keycloak_password(user)?,
            created_at,
            disabled_at: (!enabled).then(|| created_at.unwrap_or_else(Utc::now)),
            ..SourceAccount::default()
        })
    })();
    SourceRecord { line, key, account }
}

/// The password credential: `secretData` and `credentialData` are JSON
/// documents inside strings. No password credential: `None` (unusable).
fn keycloak_password(
    user: &Value,
) -> Result<Option<Result<StoredHash, crate::domain::password_hash::HashError>>, Skip> {
    let Some(credential) = user["credentials"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "password"))
    else {
        return Ok(None);
    };
    let inner = |field: &str| -> Result<Value, Skip> {
        match &credential[field] {
            Value::String(s) => serde_json::from_str(s)
                .map_err(|_| Skip::new(SkipReason::MalformedHash, format!("{field} is not JSON"))),
            Value::Object(_) => Ok(credential[field].clone()),
            _ => Err(Skip::new(SkipReason::MalformedHash, format!("no {field}"))),
        }
    };
    let (secret, data) = (inner("secretData")?, inner("credentialData")?);
    let iterations = data["hashIterations"]
        .as_u64()
        .and_then(|i| u32::try_from(i).ok())
        .ok_or_else(|| Skip::new(SkipReason::MalformedHash, "no hashIterations"))?;
    let parameter = |name: &str| {
        data["additionalParameters"][name][0]
            .as_str()
            .map(str::to_owned)
    };
    Ok(Some(StoredHash::from_keycloak(
        data["algorithm"].as_str().unwrap_or("pbkdf2-sha256"),
        iterations,
        secret["salt"].as_str().unwrap_or_default(),
        secret["value"].as_str().unwrap_or_default(),
        parameter,
    )))
}

fn jsonl_record(value: Value, line: u64) -> SourceRecord {
    let key = report_key(
        value["username"].as_str().unwrap_or_default(),
        value["email"].as_str(),
    );
    let account = serde_json::from_value::<JsonlUser>(value)
        .map_err(|e| Skip::new(SkipReason::Malformed, format!("not an authql record: {e}")))
        .and_then(JsonlUser::into_source);
    SourceRecord { line, key, account }
}

/// A CSV of `auth.users` with a header row (`COPY ... TO ... CSV HEADER`,
/// or the dashboard's export).
fn supabase(
    input: impl Read,
    mut each: impl FnMut(SourceRecord, u64) -> bool,
) -> anyhow::Result<()> {
    let mut csv = csv::ReaderBuilder::new().flexible(true).from_reader(input);
    let headers = csv.headers()?.clone();
    let column = |name: &str| headers.iter().position(|h| h.trim() == name);
    let email_column = column("email").ok_or_else(|| {
        anyhow::anyhow!("the CSV has no `email` column: not an export of auth.users")
    })?;
    let columns = SupabaseColumns {
        id: column("id"),
        email: email_column,
        password: column("encrypted_password"),
        phone: column("phone"),
        created_at: column("created_at"),
        updated_at: column("updated_at"),
        confirmed_at: column("email_confirmed_at"),
        banned_until: column("banned_until"),
        deleted_at: column("deleted_at"),
        metadata: column("raw_user_meta_data"),
    };
    let mut row = csv::StringRecord::new();
    loop {
        // Where the next record starts (its own position is where it ends).
        let line = csv.position().line();
        let record = match csv.read_record(&mut row) {
            Ok(false) => return Ok(()),
            Ok(true) => supabase_record(&row, line, &columns, Utc::now()),
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                if !matches!(e.kind(), csv::ErrorKind::Utf8 { .. }) {
                    return Err(anyhow::anyhow!("the CSV is malformed at line {line}: {e}"));
                }
                unreadable(line, Skip::new(SkipReason::Malformed, "not UTF-8"))
            }
        };
        if !each(record, csv.position().byte()) {
            return Ok(());
        }
    }
}

struct SupabaseColumns {
    id: Option<usize>,
    email: usize,
    password: Option<usize>,
    phone: Option<usize>,
    created_at: Option<usize>,
    updated_at: Option<usize>,
    confirmed_at: Option<usize>,
    banned_until: Option<usize>,
    deleted_at: Option<usize>,
    metadata: Option<usize>,
}

fn supabase_record(
    row: &csv::StringRecord,
    line: u64,
    c: &SupabaseColumns,
    now: DateTime<Utc>,
) -> SourceRecord {
    let get = |i: Option<usize>| {
        i.and_then(|i| row.get(i))
            .map(str::trim)
            .filter(|s| !s.is_empty())
    };
    let email = get(Some(c.email)).map(str::to_owned);
    // Supabase keeps E.164 numbers without their `+`.
    let phone = get(c.phone).map(|p| {
        if p.bytes().all(|b| b.is_ascii_digit()) {
            format!("+{p}")
        } else {
            p.to_owned()
        }
    });
    let metadata: Value = get(c.metadata)
        .and_then(|m| serde_json::from_str(m).ok())
        .unwrap_or(Value::Null);
    let meta = |names: &[&str]| names.iter().find_map(|n| text(&metadata, n));
    // No username in auth.users: one from the metadata, else the e-mail
    // (or phone) people sign in with.
    let username = meta(&["username", "user_name", "preferred_username"])
        .or_else(|| email.clone())
        .or_else(|| phone.clone())
        .unwrap_or_default();
    let key = match report_key(&username, email.as_deref()) {
        k if k.is_empty() => get(c.id).unwrap_or_default().to_owned(),
        k => k,
    };
    let account = (|| {
        let created_at = time(get(c.created_at), "created_at")?;
        let banned_until = time(get(c.banned_until), "banned_until")?.filter(|t| *t > now);
        let deleted_at = time(get(c.deleted_at), "deleted_at")?;
        Ok(SourceAccount {
            username: username.clone(),
            email: email.clone(),
            email_verified_at: time(get(c.confirmed_at), "email_confirmed_at")?,
            phone: phone.clone(),
            name: meta(&["first_name", "given_name", "name", "full_name"]),
            surname: meta(&["last_name", "family_name", "surname"]),
            // No password (a magic-link or OAuth user): unusable.
            password_hash: get(c.password).map(|h| {
                if h.starts_with('$') {
                    StoredHash::parse(h)
                } else {
                    StoredHash::from_django(h)
                }
            }),
            created_at,
            updated_at: time(get(c.updated_at), "updated_at")?,
            disabled_at: deleted_at.or(banned_until.map(|_| now)),
            ..SourceAccount::default()
        })
    })();
    SourceRecord { line, key, account }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(format: ImportFormat, input: &str) -> Vec<SourceRecord> {
        let mut out = Vec::new();
        read_records(format, "auth.user", input.as_bytes(), |r, _| {
            out.push(r);
            true
        })
        .expect("readable");
        out
    }

    #[test]
    fn times_in_the_forms_sources_write_them() {
        let want = parse_time("2024-03-01T10:20:30.123456Z").expect("rfc3339");
        for raw in [
            "2024-03-01 10:20:30.123456+00",
            "2024-03-01 10:20:30.123456+00:00",
            "2024-03-01T10:20:30.123456",
            "2024-03-01T11:20:30.123456+01:00",
        ] {
            assert_eq!(parse_time(raw), Some(want), "{raw}");
        }
        assert_eq!(parse_time("yesterday"), None);
    }

    #[test]
    fn django_json_and_jsonl_map_fields_and_keep_lines() {
        let dump = r#"[
{"model": "auth.user", "pk": 1, "fields": {"password": "!unusable", "username": "ada",
  "first_name": "Ada", "last_name": "", "email": "ada@example.com", "is_active": false,
  "date_joined": "2024-01-02T03:04:05Z"}},
{"model": "auth.group", "pk": 1, "fields": {"name": "staff"}}
]"#;
        let records = read(ImportFormat::Django, dump);
        assert_eq!(records.len(), 2);
        let ada = records[0].account.as_ref().expect("ada");
        assert_eq!((records[0].line, records[0].key.as_str()), (2, "ada"));
        assert_eq!(ada.name.as_deref(), Some("Ada"));
        assert_eq!(ada.surname, None);
        assert!(ada.disabled_at.is_some());
        assert_eq!(ada.password_hash, Some(Ok(StoredHash::Unusable)));
        assert_eq!(
            records[1]
                .account
                .as_ref()
                .expect_err("group")
                .reason
                .as_str(),
            "other_model"
        );
        let lines = "{\"model\": \"auth.user\", \"pk\": 2, \"fields\": {\"username\": \"bob\"}}\n\nnot json\n";
        let records = read(ImportFormat::Django, lines);
        assert_eq!(records.len(), 2);
        assert_eq!(records[1].line, 3);
        assert_eq!(
            records[1]
                .account
                .as_ref()
                .expect_err("broken")
                .reason
                .as_str(),
            "malformed"
        );
    }

    #[test]
    fn supabase_rows_take_metadata_names_and_flag_banned_users() {
        let csv = "id,email,encrypted_password,phone,created_at,email_confirmed_at,banned_until,raw_user_meta_data\n\
            1f,sam@example.com,$2a$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy,15551234567,\
            2024-01-01 00:00:00+00,2024-01-02 00:00:00+00,2999-01-01 00:00:00+00,\"{\"\"first_name\"\": \"\"Sam\"\"}\"\n\
            2f,,,,,,,\n";
        let records = read(ImportFormat::Supabase, csv);
        let sam = records[0].account.as_ref().expect("sam");
        assert_eq!(sam.username, "sam@example.com");
        assert_eq!(sam.phone.as_deref(), Some("+15551234567"));
        assert_eq!(sam.name.as_deref(), Some("Sam"));
        assert!(sam.email_verified_at.is_some() && sam.disabled_at.is_some());
        assert!(matches!(
            sam.password_hash,
            Some(Ok(StoredHash::Bcrypt { .. }))
        ));
        assert_eq!(records[1].key, "2f");
        assert_eq!((records[0].line, records[1].line), (2, 3));
    }
}

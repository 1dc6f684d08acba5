//! `authql import` and `authql export`, run as the binary against a real
//! database, then signed in to over HTTP with the source systems' passwords.
//! Fixtures: tests/fixtures/import/, made by scripts/make-import-fixtures
//! with Django itself, Python's bcrypt and Keycloak's export shape.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{error_code, spawn_on, Backend, TestApp, TestDatabase, PASSWORD};
use crate::process::authql;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/import")
        .join(name)
}

fn passwords() -> BTreeMap<String, String> {
    serde_json::from_str(&std::fs::read_to_string(fixture("passwords.json")).expect("passwords"))
        .expect("passwords.json")
}

fn cli(db: &TestDatabase, dir: &Path) -> Command {
    let mut cmd = authql(dir);
    cmd.env("DATABASE_URL", &db.url).env("AUTHQL_LOG", "warn");
    cmd
}

/// Runs the command off the test's runtime, which the in-process server
/// of the same test needs meanwhile (a blocked runtime would hold its
/// SQLite write lock for as long).
async fn run(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().expect("authql runs"))
        .await
        .expect("command task")
}

/// Runs `authql import`; returns its output (stdout: the counts).
async fn import(
    db: &TestDatabase,
    dir: &Path,
    format: &str,
    file: &Path,
    extra: &[&str],
) -> Output {
    let report = dir.join("report.csv");
    let mut cmd = cli(db, dir);
    cmd.arg("import")
        .args(["--format", format])
        .arg(file)
        .arg("--report")
        .arg(&report)
        .args(extra);
    let output = run(cmd).await;
    assert!(
        !String::from_utf8_lossy(&output.stderr).contains("panicked"),
        "{output:?}"
    );
    output
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The report's rows as (key, reason), in file order.
fn report(dir: &Path) -> Vec<(String, String)> {
    let mut csv = csv::Reader::from_path(dir.join("report.csv")).expect("report");
    assert_eq!(
        csv.headers().expect("header"),
        vec!["line", "key", "reason", "detail"]
    );
    csv.records()
        .map(|r| {
            let r = r.expect("row");
            assert!(r[0].parse::<u64>().expect("line") > 0);
            (r[1].to_owned(), r[2].to_owned())
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

async fn stored_hash(app: &TestApp, username: &str) -> String {
    let pool = app.db_pool().await;
    let hash: String = sqlx::query_scalar("SELECT password_hash FROM users WHERE username = $1")
        .bind(username)
        .fetch_one(&pool)
        .await
        .expect("user stored");
    pool.close().await;
    hash
}

async fn signs_in(app: &TestApp, login: &str, password: &str) -> bool {
    let body = app.create_token(login, password).await;
    if body["errors"].is_null() {
        return true;
    }
    assert_eq!(error_code(&body), "INVALID_CREDENTIALS", "{body}");
    false
}

async fn users_sign_in_with_their_passwords(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let dir = tempfile::tempdir().expect("dir");
    let out = import(&db, dir.path(), "django", &fixture("django.json"), &[]).await;
    assert!(out.status.success(), "{out:?}");
    let counts = stdout(&out);
    for line in [
        "read: 13",
        "imported: 9",
        "skipped: 4",
        "  email_taken: 1",
        "  unsupported_hash: 1",
    ] {
        assert!(counts.contains(line), "{line} in {counts}");
    }
    assert_eq!(
        report(dir.path()),
        pairs(&[
            ("dj_md5", "unsupported_hash"),
            ("dj_dup_email", "email_taken"),
            ("DJ_PBKDF2_SHA256", "username_taken"),
            ("dj_bad_email", "invalid_email"),
        ])
    );
    for (format, file) in [
        ("supabase", "supabase.csv"),
        ("keycloak", "keycloak-realm.json"),
    ] {
        let out = import(&db, dir.path(), format, &fixture(file), &[]).await;
        assert!(out.status.success(), "{out:?}");
    }
    assert_eq!(
        report(dir.path()),
        pairs(&[("kc_weird", "unsupported_hash")]),
        "the last run's report"
    );

    let app = spawn_on(db.clone(), |_| {}).await;
    let passwords = passwords();
    for (login, password) in &passwords {
        // Skipped for the one hash at Django 5.2's 1,000,000 iterations:
        // seconds per try in a debug build.
        if login != "dj_pbkdf2_sha256" {
            assert!(
                !signs_in(&app, login, &format!("{password}x")).await,
                "{login}: a wrong password"
            );
        }
        assert!(signs_in(&app, login, password).await, "{login} signs in");
    }
    // Re-hashed to argon2id in the sign-in that verified the old hash; the
    // new hash verifies the same password.
    for username in [
        "dj_pbkdf2_sha256",
        "dj_bcrypt_sha256",
        "dj_scrypt",
        "kc_sha512",
        "sb_named",
    ] {
        let hash = stored_hash(&app, username).await;
        assert!(hash.starts_with("$argon2id$v=19$"), "{username}: {hash}");
    }
    for (login, password) in &passwords {
        assert!(signs_in(&app, login, password).await, "{login} again");
    }
    // Kept but unable to sign in, even with the right password.
    assert!(!signs_in(&app, "dj_inactive", "Inactive user pass 1").await);
    assert!(!signs_in(&app, "sb_banned@example.com", "Supabase banned pass").await);
    assert!(!signs_in(&app, "kc_disabled", "Keycloak disabled pass").await);
    assert!(!signs_in(&app, "dj_unusable", "any password at all").await);
    assert_eq!(stored_hash(&app, "kc_federated").await, "!");
    assert_eq!(stored_hash(&app, "sb_magic@example.com").await, "!");

    // What the sources said about each account.
    let pool = app.db_pool().await;
    let row: (Option<String>, Option<String>, Option<String>, i64) = sqlx::query_as(
        "SELECT phone, name, surname, CASE WHEN email_verified_at IS NULL THEN 0 ELSE 1 END
         FROM users WHERE username = $1",
    )
    .bind("sb_user@example.com")
    .fetch_one(&pool)
    .await
    .expect("sb_user");
    assert_eq!(
        row,
        (
            Some("+447911123456".into()),
            Some("Sam".into()),
            Some("Base".into()),
            1
        )
    );
    let verified: i64 = sqlx::query_scalar(
        "SELECT CASE WHEN email_verified_at IS NULL THEN 0 ELSE 1 END FROM users WHERE username = $1",
    )
            .bind("kc_sha256")
            .fetch_one(&pool)
            .await
            .expect("kc_sha256");
    assert_eq!(verified, 1);
    pool.close().await;
}

/// `dumpdata --format jsonl` imports as the JSON array does; a dry run
/// writes nothing and reports what a real run would, duplicates within the
/// file among them.
async fn django_jsonl_and_a_dry_run(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let dir = tempfile::tempdir().expect("dir");
    let dry = import(
        &db,
        dir.path(),
        "django",
        &fixture("django.jsonl"),
        &["--dry-run"],
    )
    .await;
    assert!(dry.status.success(), "{dry:?}");
    assert!(stdout(&dry).contains("would import: 9"), "{}", stdout(&dry));
    let dry_report = report(dir.path());
    let app = spawn_on(db.clone(), |_| {}).await;
    assert_eq!(app.count("users").await, 0, "a dry run writes no user");
    let real = import(&db, dir.path(), "django", &fixture("django.jsonl"), &[]).await;
    assert!(stdout(&real).contains("imported: 9"), "{real:?}");
    assert_eq!(report(dir.path()), dry_report);
    assert_eq!(dry_report.len(), 4);
    assert_eq!(app.count("users").await, 9);
    assert!(signs_in(&app, "dj_argon2", "Django argon2 pass 2!").await);
}

/// `--on-conflict fail` stops at the first conflict, with what came
/// before it written; rerun with `skip`, it passes over those.
async fn on_conflict_fail_stops_before_the_first_conflict(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let dir = tempfile::tempdir().expect("dir");
    let out = import(
        &db,
        dir.path(),
        "django",
        &fixture("django.json"),
        &["--on-conflict", "fail"],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stdout(&out).contains("stopped at the first conflict"));
    let last = report(dir.path()).pop().expect("a row");
    assert_eq!(last, ("dj_dup_email".to_owned(), "email_taken".to_owned()));
    let app = spawn_on(db.clone(), |_| {}).await;
    // The records before it, less dj_md5; none after it.
    assert!(stdout(&out).contains("read: 11\n"), "{}", stdout(&out));
    assert_eq!(app.count("users").await, 9);
    let rest = import(&db, dir.path(), "django", &fixture("django.json"), &[]).await;
    assert!(stdout(&rest).contains("imported: 0\n"), "{}", stdout(&rest));
    assert!(
        stdout(&rest).contains("already imported: 9"),
        "{}",
        stdout(&rest)
    );
    assert_eq!(report(dir.path()).len(), 4);
}

/// A dump of `n` Django users as JSON lines, with cheap pbkdf2 hashes.
fn generated_dump(n: usize) -> String {
    (1..=n)
        .map(|i| {
            let fields = json!({
                "username": format!("gen{i:05}"),
                "email": format!("gen{i:05}@example.com"),
                "password": format!("pbkdf2_sha256$1000$salt{i}$QmFzZTY0SGFzaE9mVGhpcnR5VHdvQnl0ZXMxMjM0NTY="),
                "first_name": "Gen",
                "date_joined": format!("2024-01-01T00:{:02}:{:02}.{:06}Z", i / 60 % 60, i % 60, i),
                "is_active": true,
            });
            format!("{}\n", json!({"model": "auth.user", "pk": i, "fields": fields}))
        })
        .collect()
}

async fn users_as_stored(db: &TestDatabase) -> Vec<(String, Option<String>, String, String)> {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&db.url).await.expect("connects");
    let rows: Vec<(String, Option<String>, String, String)> = sqlx::query_as(
        "SELECT username, email, password_hash, CAST(created_at AS TEXT) FROM users ORDER BY username",
    )
    .fetch_all(&pool)
    .await
    .expect("users");
    pool.close().await;
    rows
}

async fn count_users(db: &TestDatabase) -> i64 {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&db.url).await.expect("connects");
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
        .fetch_one(&pool)
        .await
        .expect("count");
    pool.close().await;
    n
}

/// Feeds the first `lines` of `dump` to an import reading standard input
/// in batches of 100, waits until `committed` users are written, then
/// signals it (`-KILL` or `-INT`). Returns its exit code.
async fn import_until(
    db: &TestDatabase,
    dir: &Path,
    dump: &str,
    lines: usize,
    committed: i64,
    signal: &str,
) -> Option<i32> {
    let mut child = cli(db, dir)
        .args([
            "import",
            "--format",
            "django",
            "-",
            "--batch-size",
            "100",
            "--report",
        ])
        .arg(dir.join("report.csv"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("import starts");
    let mut stdin = child.stdin.take().expect("stdin");
    let head: String = dump.lines().take(lines).map(|l| format!("{l}\n")).collect();
    stdin.write_all(head.as_bytes()).expect("write");
    stdin.flush().expect("flush");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while count_users(db).await < committed {
        assert!(
            std::time::Instant::now() < deadline,
            "the import wrote too little"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let kill = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(kill.success());
    let code = child.wait().expect("wait").code();
    drop(stdin);
    code
}

/// Killed after three batches, or stopped with Ctrl-C, the import leaves
/// whole batches only; a rerun passes over them and ends where one
/// uninterrupted run ends.
async fn an_interrupted_import_resumes_to_the_result_of_one_run(backend: Backend) {
    let dump = generated_dump(1000);
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("dump.jsonl");
    std::fs::write(&file, &dump).expect("dump");

    let once = TestDatabase::new(backend).await;
    let out = import(&once, dir.path(), "django", &file, &[]).await;
    assert!(stdout(&out).contains("imported: 1000"), "{}", stdout(&out));

    let resumed = TestDatabase::new(backend).await;
    let code = import_until(&resumed, dir.path(), &dump, 350, 300, "-KILL").await;
    assert_eq!(code, None, "killed by a signal");
    assert_eq!(
        count_users(&resumed).await,
        300,
        "three whole batches, not 350"
    );
    let code = import_until(&resumed, dir.path(), &dump, 550, 500, "-INT").await;
    assert_eq!(code, Some(130), "Ctrl-C exits 130");
    assert_eq!(count_users(&resumed).await, 500);
    let out = import(&resumed, dir.path(), "django", &file, &[]).await;
    assert!(out.status.success(), "{out:?}");
    assert!(stdout(&out).contains("imported: 500\n"), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("already imported: 500"),
        "{}",
        stdout(&out)
    );
    assert_eq!(report(dir.path()), vec![], "nothing to report");
    assert_eq!(
        users_as_stored(&resumed).await,
        users_as_stored(&once).await
    );
}

/// An import on a serving instance: sign-ups of some of the same names run
/// at the same time. Each name ends up with exactly one account, and the
/// import's report lists the ones the sign-ups took.
async fn import_runs_while_the_server_serves(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let app = Arc::new(spawn_on(db.clone(), |c| c.passwords.argon2_memory_kib = 1024).await);
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("dump.jsonl");
    std::fs::write(&file, generated_dump(2000)).expect("dump");
    let importer = {
        let (db, dir, file) = (db.clone(), dir.path().to_owned(), file.clone());
        tokio::spawn(
            async move { import(&db, &dir, "django", &file, &["--batch-size", "50"]).await },
        )
    };
    let sign_ups = (0..40).map(|i| {
        let app = app.clone();
        tokio::spawn(async move {
            let name = format!("gen{:05}", 1 + i * 50);
            let body = app
                .gql(
                    "mutation($input: SignUpInput!) { signUp(input: $input) { user { id } } }",
                    json!({"input": {"username": name, "password": PASSWORD}}),
                )
                .await;
            body["errors"].is_null()
        })
    });
    let signed_up = futures::future::join_all(sign_ups)
        .await
        .into_iter()
        .filter(|ok| *ok.as_ref().expect("task"))
        .count();
    let out = importer.await.expect("import task");
    assert!(out.status.success(), "{out:?}");
    let taken = report(dir.path())
        .into_iter()
        .filter(|(_, reason)| reason == "username_taken")
        .count();
    assert_eq!(taken, signed_up, "every name a sign-up took is reported");
    assert_eq!(app.count("users").await, 2000, "one account per name");
}

/// Export, then import into a fresh database: users (ids, keys, times,
/// verification, hashes) and cars (ids, order) come back exactly, and the
/// passwords still sign in.
async fn export_then_import_round_trips_users_and_cars(backend: Backend) {
    let source = TestDatabase::new(backend).await;
    let app = spawn_on(source.clone(), |_| {}).await;
    for i in 0..3 {
        app.sign_up_with(json!({
            "username": format!("driver{i}"),
            "password": PASSWORD,
            "email": format!("driver{i}@example.com"),
            "phone": "+79161234567",
            "name": "Ива́н",
            "cars": (0..i).map(|c| json!({"brand": format!("Brand{c}"), "model": "M", "year": 2001 + c, "vin": "1HGCM82633A004352"})).collect::<Vec<_>>(),
        }))
        .await;
    }
    let dir = tempfile::tempdir().expect("dir");
    let dump = dir.path().join("users.jsonl");
    let mut export = cli(&source, dir.path());
    export.args(["export", "--out"]).arg(&dump);
    let out = run(export).await;
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("exported: 3 users"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&dump).expect("dump").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "only its owner reads the hashes");
    }
    let lines: Vec<Value> = std::fs::read_to_string(&dump)
        .expect("dump")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[2]["cars"].as_array().map(Vec::len), Some(2));
    assert!(lines[0]["passwordHash"]
        .as_str()
        .expect("hash")
        .starts_with("$argon2id$"));

    let target = TestDatabase::new(backend).await;
    let out = import(&target, dir.path(), "jsonl", &dump, &[]).await;
    assert!(stdout(&out).contains("imported: 3"), "{out:?}");
    let columns = "SELECT id, username, username_key, email, email_key, phone, name, password_hash,
        CAST(created_at AS TEXT), CAST(updated_at AS TEXT), CAST(email_verified_at AS TEXT) FROM users ORDER BY id";
    let cars = "SELECT id, user_id, position, brand, model, year, vin FROM cars ORDER BY id";
    let keys = "SELECT key, user_id FROM login_keys ORDER BY key";
    type UserRow = (
        i64,
        String,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        String,
        String,
        String,
        Option<String>,
    );
    type CarRow = (i64, i64, i64, String, String, Option<i64>, Option<String>);
    sqlx::any::install_default_drivers();
    let (a, b) = (
        sqlx::AnyPool::connect(&source.url).await.expect("source"),
        sqlx::AnyPool::connect(&target.url).await.expect("target"),
    );
    let users: Vec<Vec<UserRow>> = futures::future::try_join_all(
        [&a, &b].map(|p| sqlx::query_as::<_, UserRow>(columns).fetch_all(p)),
    )
    .await
    .expect("users");
    assert_eq!(users[0], users[1]);
    let car_rows: Vec<Vec<CarRow>> = futures::future::try_join_all(
        [&a, &b].map(|p| sqlx::query_as::<_, CarRow>(cars).fetch_all(p)),
    )
    .await
    .expect("cars");
    assert_eq!(car_rows[0], car_rows[1]);
    assert_eq!(car_rows[0].len(), 3);
    let key_rows: Vec<Vec<(String, i64)>> = futures::future::try_join_all(
        [&a, &b].map(|p| sqlx::query_as::<_, (String, i64)>(keys).fetch_all(p)),
    )
    .await
    .expect("keys");
    assert_eq!(key_rows[0], key_rows[1]);

    // Imported again into the same database: everything is there already.
    let again = import(&target, dir.path(), "jsonl", &dump, &[]).await;
    assert!(stdout(&again).contains("already imported: 3"), "{again:?}");

    let imported = spawn_on(target.clone(), |_| {}).await;
    assert!(signs_in(&imported, "driver2", PASSWORD).await);
    // New sign-ups draw ids past the imported ones.
    let fresh = imported.sign_up("newcomer").await;
    assert_eq!(fresh["user"]["id"], json!("4"), "{fresh}");
}

crate::on_both_backends!(
    users_sign_in_with_their_passwords,
    django_jsonl_and_a_dry_run,
    on_conflict_fail_stops_before_the_first_conflict,
    an_interrupted_import_resumes_to_the_result_of_one_run,
    import_runs_while_the_server_serves,
    export_then_import_round_trips_users_and_cars,
);

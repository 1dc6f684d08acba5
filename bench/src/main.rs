//! authql-bench: the pieces `bench/run` puts together (see BENCHMARKS.md).
//!
//! - `load`: a closed-loop HTTP load generator (N connections, each sending
//!   its next request when the last one answered) for one workload, with a
//!   discarded warm-up; prints one JSON line. Any non-200 answer or GraphQL
//!   error counts as an error.
//! - `ceiling`: a minimal axum server doing the essential work of `me`
//!   (verify the JWT, load the user and cars) without a GraphQL engine.
//! - `argon2`: the argon2id hash rate of one core with authql's parameters.
//! - `timing`: createToken latency for an unknown login vs a wrong password.
//! - `manifest`: the trusted-documents manifest of the `me-by-id` workload.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{json, Value};

mod ceiling;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Load(LoadArgs),
    /// Prints `{"<sha256 of ME>": ME}` for AUTHQL_TRUSTED_DOCUMENTS.
    Manifest,
    Ceiling(ceiling::Args),
    Argon2 {
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        #[arg(long, default_value_t = 19_456)]
        memory_kib: u32,
        #[arg(long, default_value_t = 2)]
        iterations: u32,
    },
    Timing {
        #[arg(long)]
        url: String,
        #[arg(long, default_value_t = 300)]
        samples: usize,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Debug)]
enum Workload {
    Me,
    /// `me` named by its id in AUTHQL_TRUSTED_DOCUMENTS (see `manifest`).
    MeById,
    CreateToken,
    SignUp,
    RefreshToken,
}

#[derive(Parser, Clone)]
struct LoadArgs {
    /// GraphQL endpoint (or the ceiling's /me).
    #[arg(long)]
    url: String,
    #[arg(long, value_enum)]
    workload: Workload,
    #[arg(long, default_value_t = 32)]
    connections: usize,
    #[arg(long, default_value_t = 3.0)]
    warmup: f64,
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Server process whose peak RSS (VmHWM) is reported.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Bearer token for `me` (otherwise one is made by signing up).
    #[arg(long)]
    token: Option<String>,
    /// Label for the output line.
    #[arg(long, default_value = "authql")]
    target: String,
    /// Extra connections that send hostile documents (exponential fragments,
    /// deep values, nested aliases) the whole time; not measured, but any
    /// answer other than a refusal counts as an error.
    #[arg(long, default_value_t = 0)]
    attackers: usize,
}

/// The documents that used to stop a server (issue 8), in turn.
fn attack_documents() -> Vec<String> {
    let mut fragments = String::from("{ ...F24 }");
    for i in (1..=24).rev() {
        fragments.push_str(&format!(
            " fragment F{i} on Query {{ ...F{} ...F{} }}",
            i - 1,
            i - 1
        ));
    }
    fragments.push_str(" fragment F0 on Query { __typename }");
    let deep = format!(
        "{{ __typename(a: {}1{}) }}",
        "[".repeat(30_000),
        "]".repeat(30_000)
    );
    let mut aliases: String = (0..240).map(|i| format!("m{i}: me {{ id }} ")).collect();
    for _ in 0..17 {
        aliases = format!("... on Query {{ {aliases} }}");
    }
    vec![fragments, deep, format!("{{ {aliases} }}")]
}

/// Sends attack documents until `stop`; returns how many were not refused.
async fn attack(client: reqwest::Client, url: String, stop: Arc<AtomicBool>) -> (u64, u64) {
    let documents = attack_documents();
    let (mut sent, mut not_refused) = (0u64, 0u64);
    while !stop.load(Ordering::Relaxed) {
        let document = &documents[(sent % documents.len() as u64) as usize];
        sent += 1;
        let refused = match client
            .post(&url)
            .json(&json!({ "query": document }))
            .send()
            .await
        {
            Ok(response) => match response.json::<Value>().await {
                Ok(body) => body["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED",
                Err(_) => false,
            },
            Err(_) => false,
        };
        if !refused {
            not_refused += 1;
        }
    }
    (sent, not_refused)
}

const PASSWORD: &str = "correct horse battery staple";
const ME: &str = "{ me { id username email cars { brand model year } } }";
const SIGN_UP: &str = "mutation($i: SignUpInput!) { signUp(input: $i) { accessToken refreshToken user { id cars { id } } } }";
const CREATE_TOKEN: &str =
    "mutation($i: CreateTokenInput!) { createToken(input: $i) { accessToken refreshToken } }";
const REFRESH: &str =
    "mutation($t: String!) { refreshToken(refreshToken: $t) { accessToken refreshToken } }";

fn sign_up_vars(username: &str) -> Value {
    json!({ "i": { "username": username, "password": PASSWORD, "email": format!("{username}@example.com"),
        "cars": [{ "brand": "Lada", "model": "Vesta", "year": 2021 }, { "brand": "BMW", "model": "X5", "year": 2019 }] } })
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Ceiling(args) => ceiling::serve(args),
        Command::Argon2 {
            seconds,
            memory_kib,
            iterations,
        } => argon2_rate(seconds, memory_kib, iterations),
        // One thread: the generator is pinned to one core.
        Command::Load(args) => single_thread()?.block_on(load(args)),
        Command::Manifest => {
            println!("{}", json!({ me_id(): ME }));
            Ok(())
        }
        Command::Timing { url, samples } => single_thread()?.block_on(timing(&url, samples)),
    }
}

fn single_thread() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// The SHA-256 (hex) of ME: its id in the manifest.
fn me_id() -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(ME.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn gql(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    query: &str,
    variables: Value,
) -> anyhow::Result<Value> {
    post(
        client,
        url,
        token,
        json!({ "query": query, "variables": variables }),
    )
    .await
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    body: Value,
) -> anyhow::Result<Value> {
    let mut request = client.post(url).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await?;
    if !response.status().is_success() {
        bail!("HTTP {}", response.status());
    }
    let body: Value = response.json().await?;
    if !body["errors"].is_null() {
        bail!("GraphQL error: {}", body["errors"]);
    }
    Ok(body["data"].clone())
}

/// Signs the benchmark's user in; returns the AuthPayload.
async fn sign_in_owner(client: &reqwest::Client, url: &str) -> anyhow::Result<Value> {
    let data = gql(
        client,
        url,
        None,
        CREATE_TOKEN,
        json!({ "i": { "login": "bench-owner", "password": PASSWORD } }),
    )
    .await?;
    Ok(data["createToken"].clone())
}

/// Per-connection state for workloads that carry it (refresh chains).
struct Connection {
    id: usize,
    sent: u64,
    refresh_token: Option<String>,
}

async fn one_request(
    client: &reqwest::Client,
    args: &LoadArgs,
    conn: &mut Connection,
    run: u64,
    token: &str,
) -> anyhow::Result<()> {
    conn.sent += 1;
    match args.workload {
        Workload::Me => {
            gql(client, &args.url, Some(token), ME, json!({})).await?;
        }
        Workload::MeById => {
            let body = json!({ "documentId": format!("sha256:{}", me_id()) });
            post(client, &args.url, Some(token), body).await?;
        }
        Workload::CreateToken => {
            gql(
                client,
                &args.url,
                None,
                CREATE_TOKEN,
                json!({ "i": { "login": "bench-owner", "password": PASSWORD } }),
            )
            .await?;
        }
        Workload::SignUp => {
            let name = format!("b{run}c{}n{}", conn.id, conn.sent);
            gql(client, &args.url, None, SIGN_UP, sign_up_vars(&name)).await?;
        }
        Workload::RefreshToken => {
            let rt = conn.refresh_token.clone().context("no refresh token")?;
            let data = gql(client, &args.url, None, REFRESH, json!({ "t": rt })).await?;
            conn.refresh_token = data["refreshToken"]["refreshToken"]
                .as_str()
                .map(str::to_owned);
        }
    }
    Ok(())
}

async fn load(args: LoadArgs) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(args.connections)
        .build()?;
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64;
    // Set-up: a user with 2 cars whose token `me` reads and whose password
    // createToken checks.
    let token = match &args.token {
        Some(t) => t.clone(),
        None => {
            let owner = gql(
                &client,
                &args.url,
                None,
                SIGN_UP,
                sign_up_vars("bench-owner"),
            )
            .await;
            match owner {
                Ok(data) => data["signUp"]["accessToken"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                Err(_) => sign_in_owner(&client, &args.url).await?["accessToken"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            }
        }
    };
    let mut connections = Vec::new();
    for id in 0..args.connections {
        let refresh_token = if args.workload == Workload::RefreshToken {
            sign_in_owner(&client, &args.url).await?["refreshToken"]
                .as_str()
                .map(str::to_owned)
        } else {
            None
        };
        connections.push(Connection {
            id,
            sent: 0,
            refresh_token,
        });
    }

    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let attackers: Vec<_> = (0..args.attackers)
        .map(|_| tokio::spawn(attack(client.clone(), args.url.clone(), stop.clone())))
        .collect();
    let errors = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let mut tasks = Vec::new();
    for mut conn in connections {
        let (client, args, token) = (client.clone(), args.clone(), token.clone());
        let (measuring, stop, errors, first_error) = (
            measuring.clone(),
            stop.clone(),
            errors.clone(),
            first_error.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut latencies: Vec<u32> = Vec::with_capacity(1 << 16);
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let result = one_request(&client, &args, &mut conn, run, &token).await;
                if measuring.load(Ordering::Relaxed) {
                    latencies.push(started.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    if let Err(e) = result {
                        errors.fetch_add(1, Ordering::Relaxed);
                        first_error
                            .lock()
                            .expect("lock")
                            .get_or_insert(e.to_string());
                    }
                }
            }
            latencies
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(args.warmup)).await;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(args.duration)).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await?);
    }
    let (mut attacks, mut not_refused) = (0u64, 0u64);
    for attacker in attackers {
        let (sent, wrong) = attacker.await?;
        attacks += sent;
        not_refused += wrong;
    }
    if not_refused > 0 {
        errors.fetch_add(not_refused, Ordering::Relaxed);
        first_error
            .lock()
            .expect("lock")
            .get_or_insert(format!("{not_refused} attack documents were not refused"));
    }
    latencies.sort_unstable();
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[i] as f64 / 1000.0
    };
    let peak_rss_kib = args.server_pid.and_then(peak_rss_kib);
    println!(
        "{}",
        json!({
            "target": args.target, "workload": format!("{:?}", args.workload),
            "connections": args.connections, "requests": latencies.len(),
            "rps": latencies.len() as f64 / elapsed,
            "p50_ms": pct(0.50), "p99_ms": pct(0.99), "p999_ms": pct(0.999),
            "errors": errors.load(Ordering::Relaxed),
            "first_error": *first_error.lock().expect("lock"),
            "peak_rss_kib": peak_rss_kib,
            "attackers": args.attackers, "attack_requests": attacks,
        })
    );
    Ok(())
}

/// VmHWM: the process's peak resident set size.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Hashes per second on one thread, same parameters, for both engines; and
/// a cross-check that each verifies the other's PHC strings (bit-exact).
fn argon2_rate(seconds: f64, memory_kib: u32, iterations: u32) -> anyhow::Result<()> {
    use argon2::password_hash::{
        PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString,
    };
    let params =
        argon2::Params::new(memory_kib, iterations, 1, None).map_err(|e| anyhow::anyhow!("{e}"))?;
    let rustcrypto =
        argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let salt = SaltString::encode_b64(b"benchmark-salt16").map_err(|e| anyhow::anyhow!("{e}"))?;
    let reference = argon2_rust::Argon2::new(
        argon2_rust::Algorithm::Argon2id,
        argon2_rust::Version::V0x13,
        argon2_rust::Params::builder()
            .memory(argon2_rust::params::Memory::kib(u64::from(memory_kib)))
            .passes(iterations)
            .lanes(1)
            .threads(1)
            .build()
            .map_err(|e| anyhow::anyhow!("{e:?}"))?,
    );

    // Same PHC output: each engine verifies the other's hash.
    let ours = rustcrypto
        .hash_password(PASSWORD.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .to_string();
    argon2_rust::Argon2::verify_encoded(
        &ours,
        PASSWORD.as_bytes(),
        argon2_rust::Algorithm::Argon2id,
    )
    .map_err(|e| anyhow::anyhow!("argon2-rust rejects the argon2 crate's hash: {e:?}"))?;
    let theirs = reference
        .hash_encoded(PASSWORD.as_bytes(), b"benchmark-salt16")
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    rustcrypto
        .verify_password(
            PASSWORD.as_bytes(),
            &PasswordHash::new(&theirs).map_err(|e| anyhow::anyhow!("{e}"))?,
        )
        .map_err(|e| anyhow::anyhow!("the argon2 crate rejects argon2-rust's hash: {e}"))?;

    let rate = |f: &dyn Fn() -> anyhow::Result<()>| -> anyhow::Result<f64> {
        let started = Instant::now();
        let mut hashes = 0u64;
        while started.elapsed().as_secs_f64() < seconds {
            f()?;
            hashes += 1;
        }
        Ok(hashes as f64 / started.elapsed().as_secs_f64())
    };
    // One reused work area, as authql's pool does.
    let memory = std::cell::RefCell::new(vec![
        argon2::Block::default();
        rustcrypto.params().block_count()
    ]);
    let crypto_rate = rate(&|| {
        let mut out = [0u8; 32];
        rustcrypto
            .hash_password_into_with_memory(
                PASSWORD.as_bytes(),
                b"benchmark-salt16",
                &mut out,
                &mut memory.borrow_mut()[..],
            )
            .map_err(|e| anyhow::anyhow!("{e}"))
    })?;
    drop(memory);
    let reference_rate = rate(&|| {
        let mut out = [0u8; 32];
        reference
            .hash_into(PASSWORD.as_bytes(), b"benchmark-salt16", &mut out)
            .map_err(|e| anyhow::anyhow!("{e:?}"))
    })?;
    println!(
        "{}",
        json!({
            "hashes_per_sec": crypto_rate, "ms_per_hash": 1000.0 / crypto_rate,
            "argon2_rust_hashes_per_sec": reference_rate, "argon2_rust_ms_per_hash": 1000.0 / reference_rate,
            "argon2_rust_backend": format!("{:?}", argon2_rust::detected_backend()),
            "phc_cross_verified": true,
        })
    );
    Ok(())
}

/// createToken latency, unknown login vs wrong password, interleaved so that
/// drift on a noisy machine hits both alike.
async fn timing(url: &str, samples: usize) -> anyhow::Result<()> {
    let client = reqwest::Client::builder().no_proxy().build()?;
    let _ = gql(&client, url, None, SIGN_UP, sign_up_vars("timing-owner")).await;
    let mut unknown = Vec::with_capacity(samples);
    let mut wrong = Vec::with_capacity(samples);
    for i in 0..samples * 2 + 20 {
        let (login, bucket) = if i % 2 == 0 {
            (format!("nobody-{i}"), &mut unknown)
        } else {
            ("timing-owner".to_owned(), &mut wrong)
        };
        let started = Instant::now();
        let answer = gql(
            &client,
            url,
            None,
            CREATE_TOKEN,
            json!({ "i": { "login": login, "password": "not the password" } }),
        )
        .await;
        let micros = started.elapsed().as_micros() as f64;
        match answer {
            Err(e) if e.to_string().contains("INVALID_CREDENTIALS") => {}
            other => bail!("expected INVALID_CREDENTIALS, got {other:?}"),
        }
        if i >= 20 {
            bucket.push(micros / 1000.0);
        }
    }
    let stats = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (v.len() as f64 - 1.0);
        (v[v.len() / 2], v[v.len() * 9 / 10], mean, var)
    };
    let (u_med, u_p90, u_mean, u_var) = stats(&mut unknown);
    let (w_med, w_p90, w_mean, w_var) = stats(&mut wrong);
    let welch_t =
        (u_mean - w_mean) / (u_var / unknown.len() as f64 + w_var / wrong.len() as f64).sqrt();
    println!(
        "{}",
        json!({
            "samples_each": samples,
            "unknown_login_ms": { "median": u_med, "p90": u_p90, "mean": u_mean },
            "wrong_password_ms": { "median": w_med, "p90": w_p90, "mean": w_mean },
            "median_difference_pct": (u_med - w_med) / w_med * 100.0,
            "welch_t": welch_t,
        })
    );
    Ok(())
}

//! Micro-benchmarks (criterion): token issue and verify, sign-up validation,
//! the GraphQL execution of `me` without HTTP on a throwaway SQLite
//! database, and what refusing a hostile document costs.
//! `cargo bench --bench micro`; results in BENCHMARKS.md.

use std::net::{IpAddr, Ipv4Addr};

use authql::app::Services;
use authql::config::{Secret, ServeConfig};
use authql::domain::Client;
use authql::domain::{CarForm, Password, SignUpForm, SignUpRules};
use authql::graphql::Loaders;
use criterion::{criterion_group, criterion_main, Criterion};

const ME: &str = "{ me { id username email cars { brand model year } } }";

fn form(username: &str) -> SignUpForm {
    SignUpForm {
        username: username.into(),
        password: Password::new("correct horse battery staple"),
        email: Some(format!("{username}@example.com")),
        phone: Some("+7 999 123-45-67".into()),
        name: Some("Иван".into()),
        cars: Some(vec![
            CarForm {
                brand: "Lada".into(),
                model: "Vesta".into(),
                year: Some(2021),
                vin: Some("XTA21700000000001".into()),
                ..Default::default()
            },
            CarForm {
                brand: "BMW".into(),
                model: "X5".into(),
                year: Some(2019),
                ..Default::default()
            },
        ]),
        ..Default::default()
    }
}

fn config(dir: &std::path::Path) -> ServeConfig {
    let url = format!("sqlite://{}/bench.db", dir.display());
    let mut config = ServeConfig::defaults();
    config.database.url = url;
    config.tokens.jwt_secret = Some(Secret::new("bench-secret-bench-secret-bench-secret"));
    config
}

fn micro(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("dir");
    let services = rt
        .block_on(Services::build(&config(dir.path())))
        .expect("services");
    let client = Client::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 64);
    let signed = rt
        .block_on(services.accounts.sign_up(form("bench"), &client))
        .expect("sign up");
    let tokens = services.accounts.tokens();

    c.bench_function("token/issue", |b| {
        b.iter(|| {
            tokens.issue_access(
                1,
                "3f2c1f0e-0000-4000-8000-000000000000",
                chrono::Utc::now(),
            )
        })
    });
    c.bench_function("token/verify", |b| {
        b.iter(|| rt.block_on(tokens.verify(&signed.access_token)))
    });

    let rules = SignUpRules::new(Some("RU")).with_context_words(&["authql".into()]);
    let sample = form("ivan.petrov");
    c.bench_function("validation/sign_up (e-mail, phone, 2 cars)", |b| {
        b.iter(|| sample.clone().validate(&rules))
    });

    let viewer = rt.block_on(services.accounts.authenticate(Some(&signed.access_token)));
    c.bench_function("graphql/me with cars (no HTTP)", |b| {
        b.to_async(&rt).iter(|| async {
            let request = async_graphql::Request::new(ME)
                .data(viewer.clone())
                .data(client.clone())
                .data(Loaders::new(services.accounts.clone()));
            let response = services.schema.execute(request).await;
            assert!(response.errors.is_empty(), "{:?}", response.errors);
            response
        })
    });

    // The documents that used to stop a server, refused before the engine.
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
    let guard = &services.documents;
    c.bench_function("refuse doubling fragments, 24 levels (900 bytes)", |b| {
        b.iter(|| assert!(guard.prepare(&fragments).is_err()))
    });
    c.bench_function("refuse a list nested 30,000 deep (60 KB)", |b| {
        b.iter(|| assert!(guard.prepare(&deep).is_err()))
    });
}

/// What one sign-in attempt costs against an imported hash, beside the
/// argon2id verify every other attempt costs (SECURITY.md, "Timing").
fn imported_hashes(c: &mut Criterion) {
    use authql::auth::password::PasswordHasher;
    use authql::domain::password_hash::{Prf, StoredHash};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let config = ServeConfig::defaults();
    let hasher = PasswordHasher::new(
        &config.passwords,
        std::sync::Arc::new(authql::metrics::Metrics::new()),
    )
    .expect("hasher");
    let client = Client::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 64);
    let password = Password::new("correct horse battery staple");
    let pbkdf2 = |prf, iterations| {
        let mut hash = vec![0u8; 32];
        match prf {
            Prf::Sha256 => pbkdf2::pbkdf2_hmac::<sha2::Sha256>(
                password.expose().as_bytes(),
                b"saltsaltsalt",
                iterations,
                &mut hash,
            ),
            _ => unreachable!("only sha256 here"),
        }
        StoredHash::Pbkdf2 {
            prf,
            iterations,
            salt: b"saltsaltsalt".to_vec(),
            hash,
        }
        .encode()
    };
    let cases = [
        (
            "argon2id m=19456 t=2 (authql's own)",
            rt.block_on(hasher.hash(&password, &client)).expect("hash"),
        ),
        (
            "bcrypt cost 10 (Supabase)",
            bcrypt::hash(password.expose(), 10).expect("bcrypt"),
        ),
        (
            "pbkdf2-sha256 27,500 (older Keycloak)",
            pbkdf2(Prf::Sha256, 27_500),
        ),
        (
            "pbkdf2-sha256 1,000,000 (Django 5.2)",
            pbkdf2(Prf::Sha256, 1_000_000),
        ),
    ];
    let mut group = c.benchmark_group("verify");
    group.sample_size(10);
    for (name, stored) in &cases {
        group.bench_function(*name, |b| {
            b.iter(|| {
                let slot = hasher.slot(&client).expect("slot");
                rt.block_on(slot.verify(&password, stored)).expect("verify")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, micro, imported_hashes);
criterion_main!(benches);

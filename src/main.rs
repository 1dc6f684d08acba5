//! The `authql` binary: parse the command line, set up logging, run the
//! subcommand (`serve` by default, `migrate`, `keys`, `import`, `export`,
//! `print-schema`).

use std::process::ExitCode;

use authql::config::{Cli, Command, KeysCommand};
use authql::transfer::Ended;
use authql::{app, graphql, telemetry, transfer, App};
use clap::Parser as _;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command.unwrap_or(Command::Serve(Box::new(cli.serve))) {
        Command::Serve(config) => {
            telemetry::init(&config.log);
            match App::build(*config).await {
                Ok(app) => app.run_until(app::shutdown_signal()).await,
                Err(e) => Err(e),
            }
        }
        Command::Migrate(config) => {
            telemetry::init(&config.log);
            app::open_database(&config.database.direct(), true)
                .await
                .map(|_| tracing::info!("migrations applied"))
        }
        Command::Keys(KeysCommand::Rotate(config)) => {
            telemetry::init(&config.log);
            match app::open_database(&config.database.direct(), true).await {
                Ok(store) => authql::auth::keys::rotate(store.as_ref(), config.jwt_algorithm)
                    .await
                    .map(|kid| println!("{kid}")),
                Err(e) => Err(e),
            }
        }
        Command::Keys(KeysCommand::List(config)) => {
            telemetry::init(&config.log);
            match app::open_database(&config.database.direct(), true).await {
                Ok(store) => store.signing_keys().await.map_err(Into::into).map(|keys| {
                    for key in keys {
                        println!(
                            "{}\t{}\t{}",
                            key.kid,
                            key.algorithm.name(),
                            key.created_at.to_rfc3339()
                        );
                    }
                }),
                Err(e) => Err(e),
            }
        }
        Command::PrintSchema => {
            print!("{}", graphql::sdl());
            Ok(())
        }
        Command::Import(config) => {
            telemetry::init(&config.log);
            let ended = match app::open_database(&config.database.direct(), true).await {
                Ok(store) => transfer::import(config, store).await,
                Err(e) => Err(e),
            };
            return exit(ended);
        }
        Command::Export(config) => {
            telemetry::init(&config.log);
            let ended = match app::open_database(&config.database.direct(), true).await {
                Ok(store) => transfer::export(config, store).await,
                Err(e) => Err(e),
            };
            return exit(ended);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("authql: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// 0 complete, 1 failed or stopped at a conflict, 130 interrupted (as a
/// shell reports SIGINT).
fn exit(ended: anyhow::Result<Ended>) -> ExitCode {
    match ended {
        Ok(Ended::Complete) => ExitCode::SUCCESS,
        Ok(Ended::Conflict) => ExitCode::FAILURE,
        Ok(Ended::Interrupted) => ExitCode::from(130),
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("authql: {e:#}");
            ExitCode::FAILURE
        }
    }
}

//! End-to-end tests: the real server over real HTTP against a real database.

mod abuse;
mod account;
mod avatar;
mod connections;
mod cookies;
mod fuzz;
mod graphiql;
mod helpers;
mod http;
mod import;
mod limits;
mod mail;
mod multi_instance;
mod outage;
mod process;
mod replica;
mod security;
mod sign_in;
mod sign_up;
mod smtp;
mod tokens;
mod trusted;
mod typed_client;
mod web_app;

//! Integration tests of the zopp server library: the real service on 127.0.0.1:0 over a
//! temporary SQLite database, called through a tonic client that signs like the CLI.

mod common;

mod audit_trail;
mod auth;
mod invites;
mod lifecycle;
mod scopes;
mod secrets;
mod tls;

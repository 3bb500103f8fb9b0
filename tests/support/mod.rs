//! Helpers shared by the integration tests that need the real test environment (Docker
//! engines, registry, HAProxy, PostgreSQL, the Kubernetes control plane) that `make env-up`
//! starts, and by those that drive the CLI under test.
//!
//! Use it from a test file with `mod support;`, then start each test with
//!
//! ```ignore
//! let Some(env) = support::TestEnv::get() else { return };
//! ```
//!
//! When the environment is not up, a test returns early after a note on stderr, except
//! under CI ([`is_ci`]), where [`TestEnv::get`] panics naming what is missing: in CI a
//! missing part is a failure, never a silent skip.
//!
//! Conventions that keep tests independent of each other (they run in parallel threads):
//! - name containers, images and tables with [`unique_name`], and hold containers in a
//!   [`Container`] guard so they are removed even when the test panics;
//! - never share an HAProxy backend: lease one with [`TestEnv::lease_lane`] (a file lock;
//!   the lane's servers are deleted when the lease is dropped);
//! - write region files with [`fixture::RegionFile`], never by hand.
//!
//! One file per concern, everything re-exported here:
//!
//! | module | what |
//! |---|---|
//! | [`env`] | [`TestEnv`], [`KubeEnv`], [`is_ci`], env.sh parsing |
//! | [`cli`] | the CLI under test: [`cli`], [`run_cli`], [`spawn_cli`], [`code`], [`text`] … |
//! | [`docker`] | `docker` against one engine, [`Container`], [`Image`], what runs |
//! | [`http`] | HTTP/1.1 requests and connections, [`wait_until`] |
//! | [`haproxy`] | the Runtime API and test [`Lane`]s |
//! | [`hosts`] | the remote hosts (namespaces reached over ssh) and the lb's lanes: [`HostsEnv`] |
//! | [`load`] | a load loop through HAProxy, keep-alive and new-connection clients, that counts failed requests per kind: [`Load`] |
//! | [`answers`] | a load loop that counts answers by version: [`answers::Answers`] |
//! | [`pg`] | [`psql`] and the test database's password |
//! | [`names`] | [`unique_name`], [`unique_ident`] |
//! | [`fixture`] | region files: [`fixture::RegionFile`] and its parts |
//! | [`webhook`] | a recording webhook receiver |
//!
//! Everything here uses std only, the CLI under test and the `docker`, `psql` and `pg_dump`
//! command-line tools; [`webhook`] also uses the crate's hmac, sha2 and serde_json.
#![allow(dead_code, unused_imports)]

pub mod answers;
pub mod cli;
pub mod docker;
pub mod env;
pub mod fixture;
pub mod haproxy;
pub mod hosts;
pub mod http;
pub mod load;
pub mod names;
pub mod pg;
pub mod webhook;

pub use cli::*;
pub use docker::*;
pub use env::*;
pub use haproxy::*;
pub use hosts::*;
pub use http::*;
pub use load::*;
pub use names::*;
pub use pg::*;

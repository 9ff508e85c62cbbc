//! fastsse: Server-Sent Events behind the web server you already run.
//!
//! A FastCGI responder for nginx, Apache, lighttpd and h2o, and a CGI program, that holds
//! thousands of SSE streams in one small process, flushes every event at once, and stops a
//! stream the moment its browser leaves.
//!
//! # Layout
//! - Wire: [`fcgi::codec`] (records, a pure `Decoder`/`Encoder`) and [`fcgi::params`]
//!   (name-value pairs), [`sse`] (event encoding and the client parser). No I/O.
//! - Connection: [`fcgi::conn`] drives one FastCGI connection; [`listen`] and [`server`] own
//!   sockets, accept loops, signals and shutdown. [`cgi`] is the other transport: one request
//!   from the environment, the response on stdout.
//! - Application: [`request`], [`app`] (the routes in force, reload), [`routes`] (one module per
//!   route kind), [`streams`] (opening streams), [`source`] (where events
//!   come from), [`hub`] (topics, replay, the durable journal) and [`publish`] (publish bodies). It knows nothing of FastCGI: a transport hands it a [`request::Request`] and
//!   writes the [`response::Response`] through a [`source::BodyWriter`].
//! - [`config`] (TOML) and [`cli`] (the command line) tie it together.

// Futures every open stream's task holds (`run_stream`, `respond`'s parts, the FastCGI writer,
// the connection driver) are written `fn … -> impl Future { async move { … } }` on purpose: an
// `async fn` keeps each argument twice in its future (as given and as a local), and with
// thousands of streams waiting those bytes are most of the memory of an idle stream.
#![allow(clippy::manual_async_fn)]

pub mod access_log;
pub mod app;
pub mod auth;
#[cfg(feature = "client")]
pub mod bench;
pub mod cgi;
#[cfg(feature = "client")]
pub mod check;
pub mod cli;
pub mod command;
pub mod config;
pub mod fcgi;
pub mod flood;
pub mod hooks;
pub mod hub;
pub mod listen;
pub mod metrics;
pub mod process;
pub mod publish;
pub mod publish_client;
pub mod random;
pub mod request;
pub mod response;
pub mod routes;
pub mod server;
pub mod siblings;
pub mod source;
pub mod sse;
pub mod stats;
pub mod streams;

//! A local SendGrid Marketing API emulator, built from SendGrid's OpenAPI files (in
//! `openapi/`) and from recorded answers of the live API.
//!
//! It serves the contacts, import-status, lists, field-definitions, scopes, search (by
//! emails and by identifier) and list-membership endpoints over HTTP on loopback, with
//! SendGrid's auth, validation, asynchronous import jobs, rate-limit headers and error
//! bodies in the spec's shapes, plus scripted faults (status codes, delays, dropped
//! connections, failing jobs, refused contacts, contacts that vanish) and an inspection
//! endpoint. Errors files are served by a second listener standing in for SendGrid's
//! storage host: no auth, pre-signed-looking links that can expire. Tests start it
//! in-process with [`Emulator::start`]; the `sendgrid-emulator` binary runs it standalone.
//!
//! What follows the live API (see `docs/sendgrid.md` for the sources): rate limits per
//! endpoint family (200 for `/v3/marketing/contacts…`, 600 for the rest) with the reset as
//! seconds until it (a Unix time on request); import jobs of type `upsert_contacts` whose
//! counts are filled while pending, and that end `failed` (with an errors file) when every
//! contact errored; a 404 from search when no address is a contact and from membership
//! removal when one id is unknown; custom field names unique whatever their case;
//! contacts found by any of their four identifiers, an upsert needing at least one, and
//! an update refused (in the job's errors file) when it leaves out an identifier the
//! contact has, as the spec's description of `PUT /v3/marketing/contacts` says.
//!
//! Where it still guesses:
//! - the window length of the rate limits (60 s here; not documented);
//! - the errors file's columns (`line`, `error`, then the contact's identifiers other
//!   than the email by name, the email last; every value quoted);
//! - that an update whose identifiers belong to two contacts, or that gives another value
//!   for an identifier the contact has, errors in the job like a missing one;
//! - that identifiers other than the email are matched exactly (case and all);
//! - that a `Date` custom field refuses anything but ISO 8601 in a JSON upload;
//! - how long jobs take and how many fail (`import_delay_ms`, `fail_one_job_in`);
//! - whether one 400 names every refused contact of a body or only the first
//!   (`first_problem_only` scripts the latter);
//! - the reserved field names refused as custom field names.

mod api;
mod fields;
mod state;

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

pub use state::{
    Config, DEFAULT_WINDOW_MS, Fault, Faults, KeyConfig, LoggedRequest, RateLimit, RateLimits,
    Upserted, marketing_scopes,
};

/// A running emulator. Dropping it stops the server.
pub struct Emulator {
    addr: SocketAddr,
    state: Arc<Mutex<state::State>>,
    stop: watch::Sender<bool>,
}

/// Closes the connection of the request that carries it, without an answer.
#[derive(Clone)]
pub(crate) struct DropConnection(pub(crate) Arc<Notify>);

impl Emulator {
    /// Starts on 127.0.0.1 on a port the system picks.
    pub async fn start(config: Config) -> io::Result<Self> {
        Self::bind(config, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts on `addr`. Errors files are served on a second port of the same address,
    /// without auth, as SendGrid serves them from a storage host through pre-signed links.
    pub async fn bind(config: Config, addr: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let files = TcpListener::bind(SocketAddr::new(addr.ip(), 0)).await?;
        let files_addr = files.local_addr()?;
        let state = Arc::new(Mutex::new(state::State::new(config)));
        let (stop, stopped) = watch::channel(false);
        serve(
            listener,
            api::router(state.clone(), addr, files_addr),
            stopped.clone(),
        );
        serve(files, api::files_router(state.clone()), stopped);
        Ok(Self { addr, state, stop })
    }

    /// The base URL, such as `http://127.0.0.1:40123`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Adds scripted faults.
    pub fn script(&self, faults: Faults) {
        self.state
            .lock()
            .expect("emulator state")
            .faults
            .extend(faults);
    }

    /// The emails on a list, sorted.
    pub fn list_emails(&self, list_id: &str) -> Vec<String> {
        let mut s = self.state.lock().expect("emulator state");
        s.settle();
        let mut emails: Vec<String> = s
            .contacts
            .values()
            .filter(|c| c.list_ids.contains(list_id))
            .filter_map(|c| c.fields.email().map(str::to_owned))
            .collect();
        emails.sort_unstable();
        emails
    }

    /// Deletes a contact, as someone might in SendGrid's UI; true when it existed.
    pub fn delete_contact(&self, email: &str) -> bool {
        let mut s = self.state.lock().expect("emulator state");
        s.settle();
        s.delete("email", email)
    }

    /// Everything the inspection endpoint shows: lists with their contacts, and the log.
    pub fn inspect(&self) -> serde_json::Value {
        api::inspection(&mut self.state.lock().expect("emulator state"))
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.state.lock().expect("emulator state").log.clone()
    }

    /// Stops accepting connections.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Serves `app` on `listener` until `stopped` changes.
fn serve(listener: TcpListener, app: axum::Router, mut stopped: watch::Receiver<bool>) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    if let Ok((stream, _)) = accepted {
                        serve_connection(app.clone(), stream);
                    }
                }
                _ = stopped.changed() => break,
            }
        }
    });
}

fn serve_connection(app: axum::Router, stream: tokio::net::TcpStream) {
    use tower::ServiceExt;
    let drop_signal = Arc::new(Notify::new());
    let signal = drop_signal.clone();
    let service =
        hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request
                .extensions_mut()
                .insert(DropConnection(signal.clone()));
            app.clone().oneshot(request)
        });
    tokio::spawn(async move {
        let connection = hyper::server::conn::http1::Builder::new()
            .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
        tokio::select! {
            _ = connection => {}
            // Dropping the connection future closes the socket with no answer.
            _ = drop_signal.notified() => {}
        }
    });
}

//! One run of an export at a time across machines: a lease on `run.lock` in the object
//! store that holds the state.
//!
//! The lock object says who holds it and until when. It is created only if absent
//! (`If-None-Match: *`), renewed every third of the lease by a write conditional on the
//! version the holder last wrote (`If-Match`), and released by a conditional write that
//! marks it free. A lock whose lease ran out (its holder died, or hung past it) is taken
//! over by the same conditional write; of two runs racing for a lock, the store lets one
//! write win and the other gets a precondition failure, so never both. Leases compare
//! wall clocks: the machines' clocks must agree to within a small part of the lease.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use pipeline_engine::store::{Store, StorePath};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::remote::RemoteState;
use crate::{StateError, unix_now};

#[derive(Debug, Serialize, Deserialize)]
struct Holder {
    holder: String,
    since: i64,
    expires: i64,
    #[serde(default)]
    released: bool,
}

/// The lease, renewed in the background until dropped.
#[derive(Debug)]
pub struct LeaseLock {
    store: Arc<dyn ObjectStore>,
    path: StorePath,
    version: Arc<Mutex<UpdateVersion>>,
    renewal: tokio::task::JoinHandle<()>,
    lost: Arc<AtomicBool>,
    holder: String,
    /// Who held the lock before and let its lease run out, if anyone.
    pub recovered_from: Option<String>,
}

fn who() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "an unnamed host".into());
    format!("pid {} on {host}", std::process::id())
}

fn body(holder: &str, since: i64, lease: Duration, released: bool) -> PutPayload {
    let expires = if released {
        0
    } else {
        unix_now() + lease.as_secs() as i64
    };
    let text = serde_json::to_vec(&Holder {
        holder: holder.to_owned(),
        since,
        expires,
        released,
    })
    .unwrap_or_default();
    PutPayload::from(text)
}

impl LeaseLock {
    /// Takes the lease on `state`'s lock for `lease`, or says who holds it.
    pub async fn acquire(
        state: &RemoteState,
        export: &str,
        lease: Duration,
    ) -> Result<Self, StateError> {
        let store: &Store = &state.store;
        let path = state.object("run.lock");
        let url = format!("{}/run.lock", state.url.as_str().trim_end_matches('/'));
        let failed = |e: object_store::Error| StateError::Store {
            context: format!("cannot take the lock {url}"),
            message: pipeline_engine::store::describe(store.cloud, &state.url, &e),
        };
        let holder = who();
        let since = unix_now();
        let create = PutOptions::from(PutMode::Create);
        let (written, recovered_from) = match store
            .inner
            .put_opts(&path, body(&holder, since, lease, false), create)
            .await
        {
            Ok(written) => (written, None),
            Err(object_store::Error::AlreadyExists { .. }) => {
                let found = store.inner.get(&path).await.map_err(failed)?;
                let meta = found.meta.clone();
                let bytes = found.bytes().await.map_err(failed)?;
                let current: Option<Holder> = serde_json::from_slice(&bytes).ok();
                let busy = |who: String| StateError::Busy {
                    export: export.to_owned(),
                    holder: who,
                    path: url.clone().into(),
                };
                let recovered = match &current {
                    Some(h) if h.released => None,
                    Some(h) if h.expires > unix_now() => {
                        return Err(busy(format!(
                            "{}, since {}, lease until {}",
                            h.holder, h.since, h.expires
                        )));
                    }
                    Some(h) => Some(format!("{}, since {}", h.holder, h.since)),
                    None => Some("a lock this version of pipeline cannot read".into()),
                };
                let update = PutOptions::from(PutMode::Update(UpdateVersion {
                    e_tag: meta.e_tag,
                    version: meta.version,
                }));
                match store
                    .inner
                    .put_opts(&path, body(&holder, since, lease, false), update)
                    .await
                {
                    Ok(written) => (written, recovered),
                    // Another run took it between our read and our write.
                    Err(
                        object_store::Error::Precondition { .. }
                        | object_store::Error::NotFound { .. },
                    ) => {
                        return Err(busy("another run that took it just now".into()));
                    }
                    Err(e) => return Err(failed(e)),
                }
            }
            Err(e) => return Err(failed(e)),
        };
        let version = Arc::new(Mutex::new(UpdateVersion {
            e_tag: written.e_tag,
            version: written.version,
        }));
        let renewal = tokio::spawn(renew(
            Arc::clone(&store.inner),
            path.clone(),
            Arc::clone(&version),
            Arc::clone(&state.lost),
            holder.clone(),
            since,
            lease,
        ));
        Ok(Self {
            store: Arc::clone(&store.inner),
            path,
            version,
            renewal,
            lost: Arc::clone(&state.lost),
            holder,
            recovered_from,
        })
    }
}

/// Renews the lease every third of it; a failed renewal marks the lease lost.
async fn renew(
    store: Arc<dyn ObjectStore>,
    path: StorePath,
    version: Arc<Mutex<UpdateVersion>>,
    lost: Arc<AtomicBool>,
    holder: String,
    since: i64,
    lease: Duration,
) {
    loop {
        tokio::time::sleep(lease / 3).await;
        let mut current = version.lock().await;
        let update = PutOptions::from(PutMode::Update(current.clone()));
        match store
            .put_opts(&path, body(&holder, since, lease, false), update)
            .await
        {
            Ok(written) => {
                *current = UpdateVersion {
                    e_tag: written.e_tag,
                    version: written.version,
                };
            }
            Err(e) => {
                lost.store(true, Ordering::SeqCst);
                tracing::error!(error = %e, "Lost the export's lock: the state is no longer written");
                return;
            }
        }
    }
}

impl Drop for LeaseLock {
    fn drop(&mut self) {
        self.renewal.abort();
        if self.lost.load(Ordering::SeqCst) {
            return;
        }
        // Marked free by a write conditional on our last version, so a lock another run
        // has taken over is never touched.
        let store = Arc::clone(&self.store);
        let path = self.path.clone();
        let version = Arc::clone(&self.version);
        let payload = body(&self.holder, 0, Duration::ZERO, true);
        let release = async move {
            let current = version.lock().await.clone();
            store
                .put_opts(&path, payload, PutOptions::from(PutMode::Update(current)))
                .await
        };
        match block_on(release) {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "Could not release the export's lock; the next run takes it over when its lease ends");
            }
            Err(e) => tracing::warn!(error = %e, "Could not release the export's lock"),
        }
    }
}

/// Runs the release from `Drop` inside the run's (multi-threaded) runtime. Nothing may be
/// held across it that a runtime task waits for: that task could sit on this very worker.
fn block_on<F: std::future::Future>(future: F) -> std::io::Result<F::Output> {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            Ok(tokio::task::block_in_place(|| handle.block_on(future)))
        }
        _ => Err(std::io::Error::other(
            "a state in an object store is written from a multi-threaded runtime only",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    fn state(store: &Arc<InMemory>) -> RemoteState {
        let url = url::Url::parse("s3://lake/state/daily").unwrap();
        let store = Store {
            cloud: pipeline_spec::Cloud::S3,
            root: pipeline_engine::store::root_of(&url),
            inner: Arc::clone(store) as Arc<dyn ObjectStore>,
        };
        RemoteState::new(store, url).unwrap()
    }

    async fn holder(store: &InMemory) -> Holder {
        let path = StorePath::from("state/daily/run.lock");
        let bytes = store.get(&path).await.unwrap().bytes().await.unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_held_lease_refuses_a_second_run_and_a_released_one_is_taken_quietly() {
        let store = Arc::new(InMemory::new());
        let lease = Duration::from_secs(60);
        let first = LeaseLock::acquire(&state(&store), "daily", lease)
            .await
            .unwrap();
        assert_eq!(first.recovered_from, None);
        let held = holder(&store).await;
        assert!(!held.released && held.expires > unix_now());

        let refused = LeaseLock::acquire(&state(&store), "daily", lease)
            .await
            .unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("export `daily` is already running (pid "),
            "{refused}"
        );
        drop(first);
        assert!(holder(&store).await.released);
        let second = LeaseLock::acquire(&state(&store), "daily", lease)
            .await
            .unwrap();
        assert_eq!(
            second.recovered_from, None,
            "a released lock is no recovery"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_expired_lease_is_taken_over_and_its_holder_named() {
        let store = Arc::new(InMemory::new());
        let dead = Holder {
            holder: "pid 7 on worker-a".into(),
            since: 100,
            expires: unix_now() - 1,
            released: false,
        };
        store
            .put(
                &StorePath::from("state/daily/run.lock"),
                PutPayload::from(serde_json::to_vec(&dead).unwrap()),
            )
            .await
            .unwrap();
        let taken = LeaseLock::acquire(&state(&store), "daily", Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(
            taken.recovered_from.as_deref(),
            Some("pid 7 on worker-a, since 100")
        );
        assert_eq!(holder(&store).await.holder, who());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lease_taken_over_by_another_run_is_lost_and_left_alone() {
        let store = Arc::new(InMemory::new());
        let remote = state(&store);
        let lock = LeaseLock::acquire(&remote, "daily", Duration::from_secs(6))
            .await
            .unwrap();
        // Another run overwrites the lock (as after this run hung past its lease).
        let path = StorePath::from("state/daily/run.lock");
        let other = Holder {
            holder: "pid 9 on worker-b".into(),
            since: unix_now(),
            expires: unix_now() + 60,
            released: false,
        };
        store
            .put(&path, PutPayload::from(serde_json::to_vec(&other).unwrap()))
            .await
            .unwrap();
        // The next renewal (after a third of the lease) fails its condition.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !remote.lost.load(Ordering::SeqCst) {
            assert!(std::time::Instant::now() < deadline, "the loss went unseen");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let refused = remote.push_record(b"{}\n").await.unwrap_err();
        assert!(
            refused.to_string().contains("this run lost its lock"),
            "{refused}"
        );
        drop(lock);
        assert_eq!(holder(&store).await.holder, "pid 9 on worker-b");
    }
}

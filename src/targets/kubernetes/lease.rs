//! The region's lock on a cluster: a `coordination.k8s.io/v1` Lease in the region's namespace,
//! one per app and environment. `holderIdentity` is who deploys, `leaseDurationSeconds` and
//! `renewTime` make the expiry, annotations carry the reason, the runner (`host:pid`, empty for
//! a lock taken by hand) and a token that tells our lease from one taken over since.
//!
//! Taking and taking over go through the API server's optimistic concurrency (create, or
//! replace at the resourceVersion read), so two runs can never both win.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, DeleteParams, PostParams, Preconditions};

use crate::lock::{Acquire, Lock};

const REASON: &str = "packfy.io/reason";
const RUNNER: &str = "packfy.io/runner";
const TOKEN: &str = "packfy.io/token";

/// The Lease's name for an app and environment.
pub fn name(app: &str, env: &str) -> String {
    format!("{app}-{env}-lock")
}

fn micro(t: DateTime<Utc>) -> MicroTime {
    MicroTime(
        k8s_openapi::jiff::Timestamp::from_microsecond(t.timestamp_micros()).unwrap_or_default(),
    )
}

fn chrono_of(t: &MicroTime) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.0.as_microsecond()).unwrap_or_default()
}

fn lock_of(lease: &Lease) -> Option<Lock> {
    let spec = lease.spec.as_ref()?;
    let holder = spec.holder_identity.clone().filter(|h| !h.is_empty())?;
    let ann = lease.metadata.annotations.clone().unwrap_or_default();
    let since = spec
        .acquire_time
        .as_ref()
        .map(chrono_of)
        .unwrap_or_else(Utc::now);
    let renewed = spec.renew_time.as_ref().map(chrono_of).unwrap_or(since);
    let secs = i64::from(spec.lease_duration_seconds.unwrap_or(0));
    Some(Lock {
        holder,
        reason: ann.get(REASON).cloned().unwrap_or_default(),
        since,
        expires: renewed + chrono::Duration::seconds(secs),
        token: ann.get(TOKEN).cloned().unwrap_or_default(),
        runner: ann.get(RUNNER).cloned().unwrap_or_default(),
    })
}

fn lease(
    name: &str,
    holder: &str,
    reason: &str,
    ttl: Duration,
    tied_to_process: bool,
    now: DateTime<Utc>,
) -> (Lease, String) {
    let token = format!(
        "{}-{}",
        std::process::id(),
        now.timestamp_nanos_opt().unwrap_or(0)
    );
    let mut ann = BTreeMap::from([
        (REASON.to_string(), reason.to_string()),
        (TOKEN.to_string(), token.clone()),
    ]);
    if tied_to_process {
        ann.insert(RUNNER.into(), crate::release::runner());
    }
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some(name.into()),
            annotations: Some(ann),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_string(),
                "packfy-deploy".to_string(),
            )])),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(ttl.as_secs().clamp(1, i32::MAX as u64) as i32),
            acquire_time: Some(micro(now)),
            renew_time: Some(micro(now)),
            ..Default::default()
        }),
    };
    (lease, token)
}

fn conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

fn not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// The current holder, if any.
pub async fn current(api: &Api<Lease>, name: &str) -> kube::Result<Option<Lock>> {
    Ok(api.get_opt(name).await?.as_ref().and_then(lock_of))
}

/// Tries once to take the lock. A stale holder is not taken over here: the caller decides
/// (and says so), then frees it with [`release`] and its token.
pub async fn try_lock(
    api: &Api<Lease>,
    name: &str,
    holder: &str,
    reason: &str,
    ttl: Duration,
    tied_to_process: bool,
) -> kube::Result<Acquire> {
    let now = Utc::now();
    let (mut ours, token) = lease(name, holder, reason, ttl, tied_to_process, now);
    match api.get_opt(name).await? {
        None => match api.create(&PostParams::default(), &ours).await {
            Ok(l) => Ok(Acquire::Acquired(
                lock_of(&l).expect("our lease has a holder"),
            )),
            // someone created it between our read and our create
            Err(e) if conflict(&e) => held(api, name).await,
            Err(e) => Err(e),
        },
        Some(existing) => match lock_of(&existing) {
            Some(other) => Ok(Acquire::Held(other)),
            // released (no holder): take it at the version we read
            None => {
                ours.metadata.resource_version = existing.metadata.resource_version.clone();
                match api.replace(name, &PostParams::default(), &ours).await {
                    Ok(l) if lock_of(&l).is_some_and(|x| x.token == token) => {
                        Ok(Acquire::Acquired(lock_of(&l).expect("checked")))
                    }
                    Ok(_) => held(api, name).await,
                    Err(e) if conflict(&e) => held(api, name).await,
                    Err(e) => Err(e),
                }
            }
        },
    }
}

async fn held(api: &Api<Lease>, name: &str) -> kube::Result<Acquire> {
    Ok(match current(api, name).await? {
        Some(l) => Acquire::Held(l),
        // it was taken and freed again in between: report it as held by nobody in particular
        None => Acquire::Held(Lock {
            holder: "another run (just released)".into(),
            reason: String::new(),
            since: Utc::now(),
            expires: Utc::now(),
            token: String::new(),
            runner: String::new(),
        }),
    })
}

/// Deletes the Lease if it still carries `token` (the resourceVersion precondition makes the
/// read and the delete one step).
pub async fn release(api: &Api<Lease>, name: &str, token: &str) -> kube::Result<()> {
    let Some(l) = api.get_opt(name).await? else {
        return Ok(());
    };
    if lock_of(&l).is_none_or(|x| x.token != token) {
        return Ok(());
    }
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            resource_version: l.metadata.resource_version.clone(),
            uid: l.metadata.uid.clone(),
        }),
        ..Default::default()
    };
    match api.delete(name, &dp).await {
        Ok(_) => Ok(()),
        Err(e) if conflict(&e) || not_found(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Deletes the Lease whoever holds it (`unlock --force`).
pub async fn force_release(api: &Api<Lease>, name: &str) -> kube::Result<()> {
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(e) if not_found(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Keeps our lease alive while a long rollout runs: renews `renewTime` every third of the
/// TTL. Stops (and the lease then expires) when the guard drops.
pub struct Renewal(tokio::task::JoinHandle<()>);

impl Renewal {
    pub fn start(api: Api<Lease>, name: String, token: String, ttl: Duration) -> Renewal {
        Renewal(tokio::spawn(async move {
            let every = (ttl / 3).max(Duration::from_secs(1));
            loop {
                tokio::time::sleep(every).await;
                let Ok(Some(mut l)) = api.get_opt(&name).await else {
                    return;
                };
                if lock_of(&l).is_none_or(|x| x.token != token) {
                    return;
                }
                if let Some(spec) = l.spec.as_mut() {
                    spec.renew_time = Some(micro(Utc::now()));
                }
                let _ = api.replace(&name, &PostParams::default(), &l).await;
            }
        }))
    }
}

impl Drop for Renewal {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_reads_back_as_the_lock_it_was_written_as() {
        let now = Utc::now();
        let (l, token) = lease(
            "x",
            "ana@packfy",
            "deploy 2.0",
            Duration::from_secs(900),
            true,
            now,
        );
        let lock = lock_of(&l).unwrap();
        assert_eq!(lock.holder, "ana@packfy");
        assert_eq!(lock.reason, "deploy 2.0");
        assert_eq!(lock.token, token);
        let now = chrono_of(&micro(now)); // the API keeps microseconds
        assert_eq!(lock.expires, now + chrono::Duration::seconds(900));
        assert_eq!(lock.runner, crate::release::runner());
        assert!(!lock.is_stale(now));
        assert!(lock.is_stale(now + chrono::Duration::seconds(901)));
    }

    #[test]
    fn a_lock_taken_by_hand_is_not_tied_to_the_process() {
        let (l, _) = lease("x", "a", "r", Duration::from_secs(60), false, Utc::now());
        assert_eq!(lock_of(&l).unwrap().runner, "");
    }

    #[test]
    fn a_lease_without_holder_is_free() {
        let (mut l, _) = lease("x", "a", "r", Duration::from_secs(60), false, Utc::now());
        l.spec.as_mut().unwrap().holder_identity = None;
        assert!(lock_of(&l).is_none());
    }
}

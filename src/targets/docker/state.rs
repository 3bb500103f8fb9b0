//! State kept on the Docker engine itself: the deploy lock and the release records.
//!
//! Both are Docker volumes with labels, because volumes need no image (none can be assumed on
//! a fresh host) and the engine creates a named volume once: creating the lock volume either
//! makes ours, or hands back the existing one with its holder's labels. Listing the history is
//! one `GET /volumes` with a label filter, from any machine that reaches the engine.
//! Records are immutable: a record is updated by writing the next `seq` and removing the old.

use std::collections::HashMap;

use anyhow::{anyhow, Context};
use bollard::models::VolumeCreateRequest;
use bollard::query_parameters::{ListVolumesOptions, RemoveVolumeOptions};
use chrono::{DateTime, Utc};

use super::naming::{self, Scope};
use super::Engine;
use crate::lock::{Acquire, Lock};
use crate::release::Release;

impl Engine {
    async fn volumes(
        &self,
        filter: &[(&'static str, String)],
    ) -> anyhow::Result<Vec<HashMap<String, String>>> {
        let filters: HashMap<String, Vec<String>> = HashMap::from([(
            "label".to_string(),
            filter.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        )]);
        let list = self
            .docker
            .list_volumes(Some(ListVolumesOptions {
                filters: Some(filters),
            }))
            .await
            .with_context(|| format!("cannot list volumes on {}", self.endpoint))?;
        Ok(list
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(|v| {
                let mut labels = v.labels;
                labels.insert("__name".into(), v.name);
                labels
            })
            .collect())
    }

    async fn remove_volume(&self, name: &str) -> anyhow::Result<()> {
        match self
            .docker
            .remove_volume(name, Some(RemoveVolumeOptions { force: true }))
            .await
        {
            Ok(()) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("cannot remove volume {name}")),
        }
    }

    /// Tries to take the lock once.
    /// `tied_to_process`: the lock is stale as soon as this process is gone (a deploy's lock),
    /// rather than only at its expiry (a lock held by hand).
    pub async fn try_lock(
        &self,
        scope: &Scope,
        holder: &str,
        reason: &str,
        ttl: std::time::Duration,
        tied_to_process: bool,
    ) -> anyhow::Result<Acquire> {
        let token = lock_token();
        self.try_lock_as(scope, holder, reason, ttl, tied_to_process, &token)
            .await
    }

    /// [`Engine::try_lock`] with the caller's token: a region of several hosts takes its lock
    /// on each with one token, so the lock it holds is the same lock everywhere.
    pub async fn try_lock_as(
        &self,
        scope: &Scope,
        holder: &str,
        reason: &str,
        ttl: std::time::Duration,
        tied_to_process: bool,
        token: &str,
    ) -> anyhow::Result<Acquire> {
        let now = Utc::now();
        let token = token.to_string();
        let mut labels = scope.labels("lock");
        labels.insert(naming::HOLDER.into(), holder.into());
        labels.insert(naming::REASON.into(), reason.into());
        labels.insert(naming::SINCE.into(), now.to_rfc3339());
        let expires =
            now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::minutes(15));
        labels.insert(naming::EXPIRES.into(), expires.to_rfc3339());
        labels.insert(naming::TOKEN.into(), token.clone());
        if tied_to_process {
            labels.insert(naming::RUNNER.into(), crate::release::runner());
        }
        let create = || {
            self.docker.create_volume(VolumeCreateRequest {
                name: Some(scope.lock_volume()),
                labels: Some(labels.clone()),
                ..Default::default()
            })
        };
        let mut vol = create()
            .await
            .with_context(|| format!("cannot create the lock on {}", self.endpoint))?;
        if parse_lock(&vol.labels).is_none() {
            // A lock volume without its labels names no holder, so nobody holds it: an engine
            // stopped while it was being made, seen to come back without them. (A lock is made
            // in one create with its labels, so a live one always has them.)
            self.remove_volume(&scope.lock_volume()).await?;
            vol = create()
                .await
                .with_context(|| format!("cannot create the lock on {}", self.endpoint))?;
        }
        let lock = parse_lock(&vol.labels)
            .ok_or_else(|| anyhow!("the lock volume {} has no lock labels", scope.lock_volume()))?;
        Ok(if lock.token == token {
            Acquire::Acquired(lock)
        } else {
            Acquire::Held(lock)
        })
    }

    /// Removes a lock, whoever holds it (the caller decided it may).
    pub async fn break_lock(&self, scope: &Scope) -> anyhow::Result<()> {
        self.remove_volume(&scope.lock_volume()).await
    }

    /// Frees our lock; does nothing if someone else holds it now.
    pub async fn unlock(&self, scope: &Scope, ours: &Lock) -> anyhow::Result<()> {
        if let Some(current) = self.current_lock(scope).await? {
            if current.token == ours.token {
                self.remove_volume(&scope.lock_volume()).await?;
            }
        }
        Ok(())
    }

    pub async fn current_lock(&self, scope: &Scope) -> anyhow::Result<Option<Lock>> {
        let found = self.volumes(&scope.filter("lock")).await?;
        Ok(found.first().and_then(parse_lock))
    }

    /// Writes (or rewrites) a release record.
    pub async fn save_release(&self, scope: &Scope, release: &Release) -> anyhow::Result<()> {
        let existing: Vec<_> = self
            .volumes(&scope.filter("release"))
            .await?
            .into_iter()
            .filter(|l| l.get(naming::RELEASE) == Some(&release.id))
            .collect();
        let seq = existing
            .iter()
            .filter_map(|l| l.get(naming::RECORD_SEQ)?.parse::<u32>().ok())
            .max()
            .unwrap_or(0)
            + 1;
        let mut labels = scope.labels("release");
        labels.insert(naming::RELEASE.into(), release.id.clone());
        labels.insert(naming::RECORD_SEQ.into(), seq.to_string());
        // The record leaves the process: secret values quoted in errors are masked.
        let mut json = serde_json::to_value(release)?;
        // When this copy was written: of two unfinished copies on two hosts (a paused
        // canary, steered while one host missed a save), the later is the one to go on from.
        json[SAVED_AT] = Utc::now()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            .into();
        crate::secrets::mask_json(&mut json);
        labels.insert(naming::RECORD.into(), json.to_string());
        self.docker
            .create_volume(VolumeCreateRequest {
                name: Some(scope.record_volume(&release.id, seq)),
                labels: Some(labels),
                ..Default::default()
            })
            .await
            .with_context(|| {
                format!("cannot record release {} on {}", release.id, self.endpoint)
            })?;
        for old in existing {
            if let Some(name) = old.get("__name") {
                self.remove_volume(name).await?;
            }
        }
        Ok(())
    }

    /// All release records of the scope, oldest first.
    pub async fn releases(&self, scope: &Scope) -> anyhow::Result<Vec<Release>> {
        let mut by_id: HashMap<String, (u32, Release)> = HashMap::new();
        for labels in self.volumes(&scope.filter("release")).await? {
            let (Some(json), Some(seq)) =
                (labels.get(naming::RECORD), labels.get(naming::RECORD_SEQ))
            else {
                continue;
            };
            let seq: u32 = seq.parse().unwrap_or(0);
            let Ok(rel) = serde_json::from_str::<Release>(json) else {
                continue;
            };
            match by_id.get(&rel.id) {
                Some((s, _)) if *s >= seq => {}
                _ => {
                    by_id.insert(rel.id.clone(), (seq, rel));
                }
            }
        }
        let mut out: Vec<Release> = by_id.into_values().map(|(_, r)| r).collect();
        out.sort_by_key(|r| r.number);
        Ok(out)
    }

    /// Removes the records of releases that are no longer kept (one listing for all of them).
    pub async fn forget_releases(&self, scope: &Scope, ids: &[&str]) -> anyhow::Result<()> {
        for labels in self.volumes(&scope.filter("release")).await? {
            if labels
                .get(naming::RELEASE)
                .is_some_and(|r| ids.contains(&r.as_str()))
            {
                if let Some(name) = labels.get("__name") {
                    self.remove_volume(name).await?;
                }
            }
        }
        Ok(())
    }
}

/// A token unique to one taking of a lock: this process and the time.
pub fn lock_token() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        Utc::now().timestamp_nanos_opt().unwrap_or(0)
    )
}

/// The key of a record's copy that says when it was written (RFC 3339, ms, UTC).
pub const SAVED_AT: &str = "saved_at";

fn saved_at(r: &Release) -> Option<DateTime<Utc>> {
    let t = r.state.get(SAVED_AT)?.as_str()?;
    DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// One history from the records each host holds: a release is the most finished of its
/// copies (a host that was down when a release ended still has it in progress), or the
/// latest finished, or of copies still under way the latest written (a canary's steps);
/// oldest first.
pub fn merge_histories(per_host: Vec<Vec<Release>>) -> Vec<Release> {
    let mut by_id: HashMap<String, Release> = HashMap::new();
    for list in per_host {
        for r in list {
            let better = match by_id.get(&r.id) {
                None => true,
                Some(have) => match (have.finished_at, r.finished_at) {
                    (None, Some(_)) => true,
                    (Some(a), Some(b)) => b > a,
                    (None, None) => saved_at(&r) > saved_at(have),
                    _ => false,
                },
            };
            if better {
                by_id.insert(r.id.clone(), r);
            }
        }
    }
    let mut out: Vec<Release> = by_id.into_values().collect();
    out.sort_by_key(|r| r.number);
    out
}

fn parse_lock(labels: &HashMap<String, String>) -> Option<Lock> {
    let time = |k: &str| {
        DateTime::parse_from_rfc3339(labels.get(k)?)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    };
    Some(Lock {
        holder: labels.get(naming::HOLDER)?.clone(),
        reason: labels.get(naming::REASON).cloned().unwrap_or_default(),
        since: time(naming::SINCE)?,
        expires: time(naming::EXPIRES)?,
        token: labels.get(naming::TOKEN)?.clone(),
        runner: labels.get(naming::RUNNER).cloned().unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::release::{Kind, Outcome};

    #[test]
    fn the_merged_history_takes_each_release_at_its_most_finished() {
        let r1 = Release::start("mx", "production", &[], Kind::Deploy, "v1", None, None);
        let mut r1_done = r1.clone();
        r1_done.outcome = Outcome::Succeeded;
        r1_done.finished_at = Some(Utc::now());
        let r2 = Release::start(
            "mx",
            "production",
            std::slice::from_ref(&r1_done),
            Kind::Deploy,
            "v2",
            Some("r1".into()),
            None,
        );
        // h1 saw r1 finish and r2 start; h2 was down when r1 finished and knows no r2.
        let merged = merge_histories(vec![vec![r1_done.clone(), r2.clone()], vec![r1.clone()]]);
        let ids: Vec<&str> = merged.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["r1", "r2"]);
        assert_eq!(merged[0].outcome, Outcome::Succeeded);
        // The same whichever host answers first.
        let merged = merge_histories(vec![vec![r1], vec![r1_done, r2]]);
        assert_eq!(merged[0].outcome, Outcome::Succeeded);
        assert_eq!(merged.len(), 2);
    }

    #[test]
    fn of_two_copies_under_way_the_merged_history_takes_the_later_written() {
        let mut at_10 = Release::start("mx", "production", &[], Kind::Deploy, "v2", None, None);
        at_10.outcome = Outcome::Paused;
        let mut at_50 = at_10.clone();
        at_10
            .state
            .insert("canary".into(), serde_json::json!({"weight": 10}));
        at_10
            .state
            .insert(SAVED_AT.into(), "2026-12-02T08:00:00.000Z".into());
        at_50
            .state
            .insert("canary".into(), serde_json::json!({"weight": 50}));
        at_50
            .state
            .insert(SAVED_AT.into(), "2026-12-02T08:00:01.250Z".into());
        // h1 missed the save of the step to 50%: whichever host answers first, 50% it is.
        for per_host in [
            vec![vec![at_10.clone()], vec![at_50.clone()]],
            vec![vec![at_50.clone()], vec![at_10.clone()]],
        ] {
            let merged = merge_histories(per_host);
            assert_eq!(merged[0].state["canary"]["weight"], 50);
        }
    }
}

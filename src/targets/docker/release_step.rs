//! A service's release step on a Docker region: a one-off container from the new image on
//! the region's engine, with the service's environment (secrets resolved), its output streamed
//! through the Ui, stopped at the step's timeout and removed after, whatever happened.
//!
//! It carries the scope's labels with kind `release-step`, so it is never taken for a
//! container of the app (`live` lists kind `app`), and one a killed run left behind is
//! removed before the next step starts.

use std::time::Duration;

use anyhow::{anyhow, Context};
use bollard::query_parameters::LogsOptions;
use futures_util::StreamExt;

use super::naming;
use super::{ContainerSpec, DockerRegion};
use crate::config::model::ReleaseStep;
use crate::targets::{LastLines, StepRun};

/// The kind label of release-step containers.
const KIND: &str = "release-step";
/// How long a step stopped at its timeout gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How often the end of a container whose output ended is looked for.
const EXIT_POLL: Duration = Duration::from_millis(200);

impl DockerRegion {
    pub(super) async fn run_release_step(
        &self,
        service: &str,
        step: &ReleaseStep,
        release: &str,
    ) -> anyhow::Result<StepRun> {
        let d = self
            .desired()
            .iter()
            .find(|d| d.name == service)
            .ok_or_else(|| anyhow!("service {service} is not part of the release"))?;
        self.remove_leftover_steps().await?;
        let mut labels = self.scope.labels(KIND);
        labels.insert(naming::SERVICE.into(), service.into());
        labels.insert(naming::RELEASE.into(), release.into());
        let spec = ContainerSpec {
            name: self.scope.release_step(service, release),
            // The image ID, so the step runs exactly what the release's containers will.
            image: d.image_id.clone(),
            env: d.env.clone(),
            labels,
            ports: Vec::new(),
            command: Some(step.argv()),
            stop_grace: STOP_GRACE,
            nano_cpus: None,
            memory: None,
        };
        let id = self
            .engine
            .run(&spec)
            .await
            .with_context(|| format!("cannot start the release step of {service}"))?;
        let result = tokio::time::timeout(step.timeout.0, self.follow(&id, service)).await;
        let run = match result {
            Ok(Ok((exit_code, tail))) => StepRun {
                exit_code: Some(exit_code),
                tail,
                ..Default::default()
            },
            Ok(Err(e)) => Err(e)?,
            Err(_) => {
                let _ = self.engine.stop(&id, STOP_GRACE).await;
                StepRun {
                    timed_out: true,
                    tail: tail_of(&self.engine.logs_tail(&id, LastLines::KEEP).await),
                    ..Default::default()
                }
            }
        };
        if let Err(e) = self.engine.remove(&id).await {
            self.region.ui.warn(format!("{e:#}"));
        }
        Ok(run)
    }

    /// Streams the container's output through the Ui until it exits; its exit code and last
    /// lines.
    async fn follow(&self, id: &str, service: &str) -> anyhow::Result<(i64, Vec<String>)> {
        let ui = &self.region.ui;
        let prefix = format!("{}/{service} release |", self.region.name);
        let mut lines = LastLines::default();
        let mut logs = self.engine.docker.logs(
            id,
            Some(LogsOptions {
                follow: true,
                stdout: true,
                stderr: true,
                ..Default::default()
            }),
        );
        while let Some(chunk) = logs.next().await {
            let chunk = chunk.context("reading the release step's output")?;
            lines.push(&chunk.into_bytes(), |l| {
                ui.status("", format!("{prefix} {l}"))
            });
        }
        let tail = lines.finish(|l| ui.status("", format!("{prefix} {l}")));
        loop {
            match self.engine.inspect(id).await? {
                Some(st) if st.running => tokio::time::sleep(EXIT_POLL).await,
                Some(st) => return Ok((st.exit_code, tail)),
                None => return Err(anyhow!("the release step's container {id} disappeared")),
            }
        }
    }

    /// Release-step containers of this scope a killed run left behind.
    async fn remove_leftover_steps(&self) -> anyhow::Result<()> {
        let filter = self.scope.filter(KIND);
        let refs: Vec<(&str, &str)> = filter.iter().map(|(k, v)| (*k, v.as_str())).collect();
        for c in self.engine.list(&refs).await? {
            if let Some(id) = c.id {
                self.region
                    .ui
                    .verbose(format!("removing a release step left behind: {id}"));
                self.engine.remove(&id).await?;
            }
        }
        Ok(())
    }
}

fn tail_of(logs: &str) -> Vec<String> {
    logs.lines().map(str::to_string).collect()
}

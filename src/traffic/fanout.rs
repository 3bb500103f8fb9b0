//! A region's load balancers: one HAProxy, or several that all get the same changes
//! (`traffic.haproxy.runtime_api: [A, B]`).
//!
//! What [`Haproxy`] does with several, and why:
//! - A change (a server added, its state or weight, a line of commands, a server deleted)
//!   goes to every load balancer at once and succeeds when it succeeded on every one; an
//!   error names the load balancer that refused it. What the others did stays done: the
//!   caller undoes a failed change the way it undoes one on a single load balancer (its
//!   ledger takes the server out again), and taking a server out tolerates a load balancer
//!   that never got it: `del_server` already does, and so does a `drain` or `maint` that one
//!   of them does not know while another does (there it is out of rotation already).
//! - Reads are merged by server name, because the traffic is spread over all of them: a
//!   server is in service only when it is on every load balancer and up on each; its
//!   counters (sessions, responses, 5xx) are the sums, its response time the worst one, so a
//!   canary's or a bake's judgement sees all the traffic. `wait_up` and `wait_drained` wait
//!   for every load balancer.
//! - With one load balancer everything is exactly what [`RuntimeApi`] does, errors included.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::future::join_all;

use super::haproxy::{
    no_such_backend, no_such_server, CheckTiming, HaproxyError, RuntimeApi, ServerStat, ServerState,
};
use crate::ssh::SshHost;

/// The weight `add server` gives a server (HAProxy's default): where load balancers
/// disagree on a weight, the merged view shows the one that is not this.
const ADDED_WEIGHT: u64 = 1;

/// A region's load balancers, one or several. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Haproxy {
    lbs: Vec<RuntimeApi>,
    /// Their addresses joined with ", " (the one address with one load balancer).
    addr: String,
}

impl Haproxy {
    /// One load balancer: see [`RuntimeApi::new`].
    pub fn new(runtime_api: &str) -> Self {
        Self::of(vec![RuntimeApi::new(runtime_api)])
    }

    /// One load balancer reached over ssh: see [`RuntimeApi::over_ssh`].
    pub fn over_ssh(host: SshHost, path: &str) -> Self {
        Self::of(vec![RuntimeApi::over_ssh(host, path)])
    }

    /// The region's load balancers, in the order listed (errors name the first that failed).
    ///
    /// # Panics
    /// With none: a region with HAProxy has at least one (validation says so).
    pub fn of(lbs: Vec<RuntimeApi>) -> Self {
        assert!(!lbs.is_empty(), "Haproxy::of needs a load balancer");
        let addr = lbs
            .iter()
            .map(RuntimeApi::address)
            .collect::<Vec<_>>()
            .join(", ");
        Haproxy { lbs, addr }
    }

    /// Each load balancer.
    pub fn load_balancers(&self) -> &[RuntimeApi] {
        &self.lbs
    }

    /// Sets how long one command may take on each load balancer.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.lbs = self
            .lbs
            .into_iter()
            .map(|lb| lb.with_timeout(timeout))
            .collect();
        self
    }

    /// Sets the check timing of servers added with a check, on every load balancer.
    pub fn with_check_timing(mut self, checks: CheckTiming) -> Self {
        self.lbs = self
            .lbs
            .into_iter()
            .map(|lb| lb.with_check_timing(checks))
            .collect();
        self
    }

    /// The Runtime API address, or the addresses joined with ", ".
    pub fn address(&self) -> &str {
        &self.addr
    }

    pub fn check_timing(&self) -> CheckTiming {
        self.lbs[0].check_timing()
    }

    /// Sends one command line to every load balancer; their answers, one after another.
    pub async fn command(&self, cmd: &str) -> Result<String, HaproxyError> {
        Ok(self.all(|lb| lb.command(cmd)).await?.concat())
    }

    /// The load balancers (their addresses) whose HAProxy has no backend `backend`: HAProxy
    /// makes no backend at run time, haproxy.cfg must have it on every one.
    pub async fn lacking_backend(&self, backend: &str) -> Result<Vec<String>, HaproxyError> {
        let answers = self
            .each(|lb| async move {
                match lb.servers(backend).await {
                    Ok(_) => Ok(false),
                    Err(e) if no_such_backend(&e) => Ok(true),
                    Err(e) => Err(e),
                }
            })
            .await;
        let missing = self.settle(answers)?;
        Ok(self
            .lbs
            .iter()
            .zip(missing)
            .filter(|(_, m)| *m)
            .map(|(lb, _)| lb.address().to_string())
            .collect())
    }

    /// More than one load balancer.
    pub fn several(&self) -> bool {
        self.lbs.len() > 1
    }

    /// Checks that every load balancer answers.
    pub async fn ping(&self) -> Result<(), HaproxyError> {
        self.all(RuntimeApi::ping).await.map(drop)
    }

    /// Adds the server on every load balancer (see [`RuntimeApi::add_server`]).
    pub async fn add_server(
        &self,
        backend: &str,
        server: &str,
        addr: SocketAddr,
        check_path: Option<&str>,
    ) -> Result<(), HaproxyError> {
        self.all(|lb| lb.add_server(backend, server, addr, check_path))
            .await
            .map(drop)
    }

    /// `set server … state` on every load balancer. Out of rotation (`drain`, `maint`) is
    /// done on a load balancer that does not have the server, as long as one of them has it.
    pub async fn set_state(
        &self,
        backend: &str,
        server: &str,
        state: ServerState,
    ) -> Result<(), HaproxyError> {
        let results = self.each(|lb| lb.set_state(backend, server, state)).await;
        if state == ServerState::Ready || self.lbs.len() == 1 {
            return self.settle(results).map(drop);
        }
        let known = results.iter().any(Result::is_ok);
        let results = results
            .into_iter()
            .map(|r| match r {
                Err(e) if known && no_such_server(&e) => Ok(()),
                r => r,
            })
            .collect();
        self.settle(results).map(drop)
    }

    /// `set server … weight` on every load balancer.
    pub async fn set_weight(
        &self,
        backend: &str,
        server: &str,
        weight: u32,
    ) -> Result<(), HaproxyError> {
        self.all(|lb| lb.set_weight(backend, server, weight))
            .await
            .map(drop)
    }

    /// One line of state-changing commands on every load balancer (each applies them together).
    pub async fn run_all(&self, cmds: &[String]) -> Result<(), HaproxyError> {
        self.all(|lb| lb.run_all(cmds)).await.map(drop)
    }

    /// Removes the server from every load balancer; one that does not have it has nothing to do.
    pub async fn del_server(&self, backend: &str, server: &str) -> Result<(), HaproxyError> {
        self.all(|lb| lb.del_server(backend, server))
            .await
            .map(drop)
    }

    /// The servers of `backend`, merged over the load balancers (see the module's doc).
    pub async fn servers(&self, backend: &str) -> Result<Vec<ServerStat>, HaproxyError> {
        let mut per_lb = self.all(|lb| lb.servers(backend)).await?;
        if per_lb.len() == 1 {
            return Ok(per_lb.pop().expect("one"));
        }
        let named: Vec<(&str, Vec<ServerStat>)> = self
            .lbs
            .iter()
            .map(RuntimeApi::address)
            .zip(per_lb)
            .collect();
        Ok(merge(&named))
    }

    /// One server, merged; `None` when no load balancer has it.
    pub async fn server(
        &self,
        backend: &str,
        server: &str,
    ) -> Result<Option<ServerStat>, HaproxyError> {
        if self.lbs.len() == 1 {
            return self.lbs[0].server(backend, server).await;
        }
        Ok(self
            .servers(backend)
            .await?
            .into_iter()
            .find(|s| s.name == server))
    }

    /// Waits until the server has no sessions left on any load balancer (true), or
    /// `timeout` passes (false).
    pub async fn wait_drained(
        &self,
        backend: &str,
        server: &str,
        timeout: Duration,
    ) -> Result<bool, HaproxyError> {
        let done = self
            .all(|lb| lb.wait_drained(backend, server, timeout))
            .await?;
        Ok(done.into_iter().all(|d| d))
    }

    /// Waits until the server is in service on every load balancer (true), or `timeout`
    /// passes (false); missing on one is an error naming it.
    pub async fn wait_up(
        &self,
        backend: &str,
        server: &str,
        timeout: Duration,
    ) -> Result<bool, HaproxyError> {
        let up = self.all(|lb| lb.wait_up(backend, server, timeout)).await?;
        Ok(up.into_iter().all(|u| u))
    }

    /// `f` on every load balancer at once; each one's result, in order.
    async fn each<'a, T, Fut>(
        &'a self,
        f: impl Fn(&'a RuntimeApi) -> Fut,
    ) -> Vec<Result<T, HaproxyError>>
    where
        Fut: Future<Output = Result<T, HaproxyError>>,
    {
        join_all(self.lbs.iter().map(f)).await
    }

    /// `f` on every load balancer at once: every answer, or the first error (naming its load
    /// balancer).
    async fn all<'a, T, Fut>(
        &'a self,
        f: impl Fn(&'a RuntimeApi) -> Fut,
    ) -> Result<Vec<T>, HaproxyError>
    where
        Fut: Future<Output = Result<T, HaproxyError>>,
    {
        let results = self.each(f).await;
        self.settle(results)
    }

    fn settle<T>(&self, results: Vec<Result<T, HaproxyError>>) -> Result<Vec<T>, HaproxyError> {
        let mut out = Vec::with_capacity(results.len());
        let mut failed = Vec::new();
        for (lb, r) in self.lbs.iter().zip(results) {
            match r {
                Ok(v) => out.push(v),
                Err(e) => failed.push(self.naming(lb, e)),
            }
        }
        let mut failed = failed.into_iter();
        match failed.next() {
            None => Ok(out),
            Some(first) => {
                for other in failed {
                    tracing::warn!(error = %other, "load balancer");
                }
                Err(first)
            }
        }
    }

    /// With several load balancers, an answer of one says which (a connection error already
    /// names its address; a bad name is the same on all of them).
    fn naming(&self, lb: &RuntimeApi, e: HaproxyError) -> HaproxyError {
        match e {
            HaproxyError::Command { .. } if self.lbs.len() > 1 => HaproxyError::On {
                addr: lb.address().to_string(),
                error: Box::new(e),
            },
            e => e,
        }
    }
}

/// The servers of one backend as several load balancers (named by address) list them, as one
/// list in the order first seen (see the module's doc).
pub fn merge(per_lb: &[(&str, Vec<ServerStat>)]) -> Vec<ServerStat> {
    let mut names: Vec<&str> = Vec::new();
    for (_, list) in per_lb {
        for s in list {
            if !names.contains(&s.name.as_str()) {
                names.push(&s.name);
            }
        }
    }
    names
        .into_iter()
        .map(|name| {
            let rows: Vec<(&str, Option<&ServerStat>)> = per_lb
                .iter()
                .map(|(addr, list)| (*addr, list.iter().find(|s| s.name == name)))
                .collect();
            merge_one(&rows)
        })
        .collect()
}

/// One server's rows (at least one present).
fn merge_one(rows: &[(&str, Option<&ServerStat>)]) -> ServerStat {
    let present: Vec<&ServerStat> = rows.iter().filter_map(|(_, s)| *s).collect();
    let mut out = present[0].clone();
    let all_same = rows
        .iter()
        .all(|(_, s)| s.is_some_and(|s| s.status == out.status));
    if !all_same {
        // The first load balancer where it is not in service says what the region sees.
        let odd = rows.iter().find(|(_, s)| s.is_none_or(|s| !s.is_up()));
        match odd {
            Some((addr, None)) => {
                out.status = format!("MAINT (not on {addr})");
                out.check_status = String::new();
            }
            Some((addr, Some(s))) => {
                out.status = format!("{} (on {addr})", s.status);
                out.check_status = s.check_status.clone();
            }
            // Up on every one, in different words ("UP", "UP 1/3"): the first says it.
            None => {}
        }
    }
    out.scur = present.iter().map(|s| s.scur).sum();
    out.stot = present.iter().map(|s| s.stot).sum();
    out.hrsp_2xx = present.iter().map(|s| s.hrsp_2xx).sum();
    out.hrsp_5xx = present.iter().map(|s| s.hrsp_5xx).sum();
    out.responses = present.iter().map(|s| s.responses).sum();
    out.rtime_ms = present.iter().map(|s| s.rtime_ms).max().unwrap_or(0);
    if present.iter().any(|s| s.weight != out.weight) {
        out.weight = present
            .iter()
            .map(|s| s.weight)
            .find(|w| *w != ADDED_WEIGHT)
            .unwrap_or(ADDED_WEIGHT);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(name: &str, status: &str) -> ServerStat {
        ServerStat {
            backend: "be".into(),
            name: name.into(),
            addr: "10.0.0.1:80".into(),
            status: status.into(),
            check_status: "L7OK".into(),
            weight: 1,
            ..Default::default()
        }
    }

    fn counted(mut s: ServerStat, n: u64, e5: u64, rtime: u64) -> ServerStat {
        s.stot = n;
        s.responses = n;
        s.hrsp_2xx = n - e5;
        s.hrsp_5xx = e5;
        s.rtime_ms = rtime;
        s.scur = 1;
        s
    }

    #[test]
    fn counters_are_summed_and_response_time_is_the_worst() {
        let merged = merge(&[
            ("lb1", vec![counted(stat("a", "UP"), 100, 3, 20)]),
            ("lb2", vec![counted(stat("a", "UP"), 50, 2, 45)]),
        ]);
        assert_eq!(merged.len(), 1);
        let a = &merged[0];
        assert_eq!(
            (a.stot, a.responses, a.hrsp_2xx, a.hrsp_5xx, a.scur),
            (150, 150, 145, 5, 2)
        );
        assert_eq!(a.rtime_ms, 45);
        assert_eq!(a.status, "UP");
        assert!(a.is_up());
    }

    #[test]
    fn up_only_when_up_on_every_load_balancer() {
        let merged = merge(&[
            (
                "lb1",
                vec![stat("a", "UP"), stat("b", "UP"), stat("c", "UP")],
            ),
            (
                "lb2",
                vec![
                    stat("a", "DOWN 1/2"),
                    stat("b", "UP 1/3"),
                    stat("d", "DRAIN"),
                ],
            ),
        ]);
        let by = |n: &str| merged.iter().find(|s| s.name == n).unwrap();
        assert_eq!(by("a").status, "DOWN 1/2 (on lb2)");
        assert!(!by("a").is_up());
        // Up on both, said differently: up.
        assert!(by("b").is_up(), "{:?}", by("b"));
        // Missing on one: not in service there, and out of rotation like a server in maint.
        assert_eq!(by("c").status, "MAINT (not on lb2)");
        assert!(!by("c").is_up());
        assert_eq!(by("d").status, "MAINT (not on lb1)");
        assert!(by("d").status.starts_with("MAINT"));
        // In the order first seen.
        let names: Vec<&str> = merged.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c", "d"]);
    }

    #[test]
    fn a_state_out_of_rotation_on_one_shows() {
        let merged = merge(&[
            ("lb1", vec![stat("a", "DRAIN")]),
            ("lb2", vec![stat("a", "UP")]),
        ]);
        assert!(merged[0].status.starts_with("DRAIN"), "{:?}", merged[0]);
        let same = merge(&[
            ("lb1", vec![stat("a", "MAINT")]),
            ("lb2", vec![stat("a", "MAINT")]),
        ]);
        assert_eq!(same[0].status, "MAINT");
    }

    #[test]
    fn a_weight_the_load_balancers_disagree_on_shows_the_odd_one() {
        let w = |w: u64| ServerStat {
            weight: w,
            ..stat("a", "UP")
        };
        for (a, b, want) in [(1, 1, 1), (1, 50, 50), (50, 1, 50), (0, 50, 0), (7, 7, 7)] {
            let merged = merge(&[("lb1", vec![w(a)]), ("lb2", vec![w(b)])]);
            assert_eq!(merged[0].weight, want, "{a} and {b}");
        }
    }

    #[tokio::test]
    async fn with_several_an_error_names_the_load_balancer_and_the_others_answer() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // Two fake Runtime APIs: the first knows the server, the second does not.
        async fn fake(reply: &'static str) -> (String, tokio::task::JoinHandle<Vec<String>>) {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap().to_string();
            let task = tokio::spawn(async move {
                let mut seen = Vec::new();
                while let Ok(Ok((mut conn, _))) =
                    tokio::time::timeout(Duration::from_millis(500), listener.accept()).await
                {
                    let mut cmd = Vec::new();
                    conn.read_to_end(&mut cmd).await.unwrap();
                    seen.push(String::from_utf8(cmd).unwrap().trim().to_string());
                    conn.write_all(reply.as_bytes()).await.unwrap();
                }
                seen
            });
            (addr, task)
        }
        let (a1, t1) = fake("\n").await;
        let (a2, t2) = fake("No such server.\n\n").await;
        let lbs = Haproxy::of(vec![RuntimeApi::new(&a1), RuntimeApi::new(&a2)]);
        assert_eq!(lbs.address(), format!("{a1}, {a2}"));

        let err = lbs.set_weight("be", "s1", 5).await.unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&a2) && !text.contains(&a1), "{text}");
        assert!(text.contains("No such server"), "{text}");
        assert!(no_such_server(&err));
        // Ready needs every one; out of rotation is done where the server is not.
        assert!(lbs.set_state("be", "s1", ServerState::Ready).await.is_err());
        lbs.set_state("be", "s1", ServerState::Drain).await.unwrap();

        let seen1 = t1.await.unwrap();
        let seen2 = t2.await.unwrap();
        // Every change went to both.
        for seen in [&seen1, &seen2] {
            assert_eq!(
                seen,
                &[
                    "set server be/s1 weight 5",
                    "set server be/s1 state ready",
                    "set server be/s1 state drain"
                ]
            );
        }
    }

    #[tokio::test]
    async fn with_one_errors_are_as_its_own() {
        let h = Haproxy::new("127.0.0.1:1");
        let err = h.ping().await.unwrap_err();
        assert!(
            matches!(err, HaproxyError::Unreachable { ref addr, .. } if addr == "127.0.0.1:1"),
            "{err:?}"
        );
        let both = Haproxy::of(vec![
            RuntimeApi::new("127.0.0.1:1"),
            RuntimeApi::new("127.0.0.1:2"),
        ]);
        // Not answering names its address already.
        let err = both.ping().await.unwrap_err();
        assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
    }
}

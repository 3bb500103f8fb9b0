//! Plans as data: what a rollout will do, computed from desired and live state by pure
//! functions. `plan` prints them, `deploy` executes them, tests assert them.

use serde::Serialize;

/// One step of a rolling update of one service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "step", content = "count")]
pub enum Step {
    /// Start this many new containers, wait until they are healthy, put them in rotation.
    Start(u32),
    /// Drain this many old containers, then stop them (kept for rollback).
    Stop(u32),
}

/// The batches of a rolling update from `old` running containers to `replicas` new ones,
/// never above `replicas + max_surge` containers and never below `replicas - max_unavailable`
/// serving ones (counting only healthy containers, which every started batch is before the
/// next step). An old container counts until its `Stop` step takes it out of rotation; with
/// `max_surge` above 0 it then drains and stops beside the next batch (the Docker target's
/// `Rollout::service`), as Kubernetes does not count terminating pods. The first deploy
/// (nothing running) starts everything at once.
pub fn rolling_steps(replicas: u32, max_surge: u32, max_unavailable: u32, old: u32) -> Vec<Step> {
    let mut steps = Vec::new();
    if old == 0 {
        if replicas > 0 {
            steps.push(Step::Start(replicas));
        }
        return steps;
    }
    let (mut new, mut old_left) = (0u32, old);
    let min_available = replicas.saturating_sub(max_unavailable);
    let ceiling = replicas + max_surge;
    // Each iteration makes progress or stops: validation rejects max_surge = max_unavailable = 0.
    while new < replicas || old_left > 0 {
        let total = new + old_left;
        let can_start = ceiling.saturating_sub(total).min(replicas - new);
        if can_start > 0 {
            steps.push(Step::Start(can_start));
            new += can_start;
            continue;
        }
        let can_stop = if new >= replicas {
            old_left
        } else {
            old_left.min(total.saturating_sub(min_available))
        };
        if can_stop > 0 {
            steps.push(Step::Stop(can_stop));
            old_left -= can_stop;
            continue;
        }
        break;
    }
    steps
}

/// How a region's replicas of a service are placed on its hosts: spread evenly in the order
/// the hosts are listed, the first hosts taking one more when it does not divide
/// (5 over 3 hosts: 2, 2, 1).
pub fn spread(replicas: u32, hosts: usize) -> Vec<u32> {
    let n = hosts.max(1) as u32;
    (0..n)
        .map(|i| replicas / n + u32::from(i < replicas % n))
        .collect()
}

/// How a region's rolling update goes over its hosts: groups of hosts that change at the
/// same time (at most `hosts_at_once`, in the order listed), and each host's share of the
/// region's `max_unavailable` while its group changes. The budget is the region's, split over
/// the group like replicas ([`spread`]), so hosts rolling side by side never take more out of
/// rotation together than the region allows. With `max_surge` 0 a host must be allowed to take
/// one out to make progress at all, so a group is never larger than `max_unavailable`.
pub fn host_groups(
    hosts: usize,
    hosts_at_once: u32,
    max_surge: u32,
    max_unavailable: u32,
) -> Vec<Vec<(usize, u32)>> {
    let mut at_once = hosts_at_once.max(1) as usize;
    if max_surge == 0 {
        at_once = at_once.min(max_unavailable.max(1) as usize);
    }
    (0..hosts)
        .collect::<Vec<_>>()
        .chunks(at_once)
        .map(|group| {
            group
                .iter()
                .copied()
                .zip(spread(max_unavailable, group.len()))
                .collect()
        })
        .collect()
}

/// What `plan` and `deploy` say about one service.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServicePlan {
    pub service: String,
    pub action: Action,
    pub from_image: Option<String>,
    pub to_image: String,
    pub from_replicas: u32,
    pub to_replicas: u32,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Nothing runs yet.
    Create,
    /// The containers change (image, environment, ports…).
    Replace,
    /// Same containers, different count.
    Scale,
    /// The service is gone from the config: its containers stop.
    Remove,
    Unchanged,
}

/// Decides the action for one service from what runs (spec hash and count) and what is wanted.
#[allow(clippy::too_many_arguments)]
pub fn plan_service(
    service: &str,
    live: Option<(&str, &str, u32)>,
    desired_image: &str,
    desired_hash: &str,
    replicas: u32,
    max_surge: u32,
    max_unavailable: u32,
) -> ServicePlan {
    let (action, from_image, from_replicas, steps) = match live {
        None => (
            Action::Create,
            None,
            0,
            rolling_steps(replicas, max_surge, max_unavailable, 0),
        ),
        Some((image, hash, count)) if hash == desired_hash && count == replicas => {
            (Action::Unchanged, Some(image.to_string()), count, vec![])
        }
        Some((image, hash, count)) if hash == desired_hash => {
            let steps = if replicas > count {
                vec![Step::Start(replicas - count)]
            } else {
                vec![Step::Stop(count - replicas)]
            };
            (Action::Scale, Some(image.to_string()), count, steps)
        }
        Some((image, _, count)) => (
            Action::Replace,
            Some(image.to_string()),
            count,
            rolling_steps(replicas, max_surge, max_unavailable, count),
        ),
    };
    ServicePlan {
        service: service.to_string(),
        action,
        from_image,
        to_image: desired_image.to_string(),
        from_replicas,
        to_replicas: replicas,
        steps,
    }
}

impl ServicePlan {
    /// One line for humans: `backend: replace 3 → 3 (app:v1 → app:v2) in 6 steps: +1 -1 +1 -1 +1 -1`
    pub fn describe(&self) -> String {
        let steps: Vec<String> = self
            .steps
            .iter()
            .map(|s| match s {
                Step::Start(n) => format!("+{n}"),
                Step::Stop(n) => format!("-{n}"),
            })
            .collect();
        match self.action {
            Action::Unchanged => format!(
                "{}: unchanged ({} × {})",
                self.service, self.to_replicas, self.to_image
            ),
            Action::Create => format!(
                "{}: create {} × {}",
                self.service, self.to_replicas, self.to_image
            ),
            Action::Remove => format!(
                "{}: remove {} container(s)",
                self.service, self.from_replicas
            ),
            Action::Scale => format!(
                "{}: scale {} → {} ({})",
                self.service, self.from_replicas, self.to_replicas, self.to_image
            ),
            Action::Replace => format!(
                "{}: replace {} → {} ({} → {}) in {} step(s): {}",
                self.service,
                self.from_replicas,
                self.to_replicas,
                self.from_image.as_deref().unwrap_or("?"),
                self.to_image,
                self.steps.len(),
                steps.join(" ")
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Step::*;
    use super::*;

    #[test]
    fn hosts_side_by_side_share_the_region_budget() {
        // Default budget 0 with surge: groups of hosts_at_once, nobody may take one out.
        assert_eq!(
            host_groups(3, 2, 1, 0),
            [vec![(0, 0), (1, 0)], vec![(2, 0)]]
        );
        // max_unavailable 1 over 3 hosts at once: one host may take one out, not all three.
        assert_eq!(host_groups(3, 3, 1, 1), [vec![(0, 1), (1, 0), (2, 0)]]);
        // No surge: every host in a group needs one of the budget, so groups shrink to it.
        assert_eq!(
            host_groups(3, 3, 0, 2),
            [vec![(0, 1), (1, 1)], vec![(2, 2)]]
        );
        assert_eq!(
            host_groups(3, 1, 0, 2),
            [vec![(0, 2)], vec![(1, 2)], vec![(2, 2)]]
        );
        assert_eq!(host_groups(1, 4, 1, 0), [vec![(0, 0)]]);
        // Whatever the knobs, a group never takes more out than the region allows.
        for hosts in 1..5 {
            for at_once in 1..5 {
                for surge in 0..3 {
                    for unavailable in 0..4 {
                        if surge == 0 && unavailable == 0 {
                            continue;
                        }
                        let groups = host_groups(hosts, at_once, surge, unavailable);
                        let flat: Vec<usize> = groups.iter().flatten().map(|(h, _)| *h).collect();
                        assert_eq!(flat, (0..hosts).collect::<Vec<_>>());
                        for g in &groups {
                            assert!(g.len() <= at_once as usize);
                            assert!(g.iter().map(|(_, u)| u).sum::<u32>() <= unavailable);
                            if surge == 0 {
                                assert!(g.iter().all(|(_, u)| *u >= 1), "{g:?}");
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn replicas_spread_evenly_first_hosts_first() {
        assert_eq!(spread(6, 2), [3, 3]);
        assert_eq!(spread(5, 3), [2, 2, 1]);
        assert_eq!(spread(1, 3), [1, 0, 0]);
        assert_eq!(spread(4, 1), [4]);
        assert_eq!(spread(0, 2), [0, 0]);
    }

    #[test]
    fn surge_one_replaces_one_at_a_time() {
        assert_eq!(
            rolling_steps(3, 1, 0, 3),
            [Start(1), Stop(1), Start(1), Stop(1), Start(1), Stop(1)]
        );
    }

    #[test]
    fn first_deploy_starts_everything() {
        assert_eq!(rolling_steps(5, 1, 0, 0), [Start(5)]);
    }

    #[test]
    fn unavailable_without_surge_stops_first() {
        assert_eq!(
            rolling_steps(3, 0, 1, 3),
            [Stop(1), Start(1), Stop(1), Start(1), Stop(1), Start(1)]
        );
    }

    #[test]
    fn big_surge_goes_in_one_batch() {
        assert_eq!(rolling_steps(3, 3, 0, 3), [Start(3), Stop(3)]);
    }

    #[test]
    fn scaling_down_while_replacing() {
        assert_eq!(
            rolling_steps(2, 1, 0, 5),
            [Stop(3), Start(1), Stop(1), Start(1), Stop(1)]
        );
    }

    #[test]
    fn scaling_up_while_replacing() {
        assert_eq!(
            rolling_steps(4, 1, 0, 2),
            [Start(3), Stop(1), Start(1), Stop(1)]
        );
    }

    #[test]
    fn invariants_hold_for_many_shapes() {
        for replicas in 1..6 {
            for surge in 0..4 {
                for unavail in 0..3 {
                    if surge == 0 && unavail == 0 {
                        continue;
                    }
                    for old in 0..7 {
                        let steps = rolling_steps(replicas, surge, unavail, old);
                        let (mut new, mut left) = (0, old);
                        for s in &steps {
                            match s {
                                Start(n) => new += n,
                                Stop(n) => left -= n,
                            }
                            if old > 0 {
                                assert!(
                                    new + left <= replicas + surge || new + left <= old,
                                    "{replicas} {surge} {unavail} {old}: {steps:?}"
                                );
                                if new < replicas {
                                    assert!(
                                        new + left >= replicas.saturating_sub(unavail).min(old),
                                        "{replicas} {surge} {unavail} {old}: {steps:?}"
                                    );
                                }
                            }
                        }
                        assert_eq!(
                            (new, left),
                            (replicas, 0),
                            "{replicas} {surge} {unavail} {old}: {steps:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn unchanged_when_hash_and_count_match() {
        let p = plan_service("backend", Some(("a:1", "h", 3)), "a:1", "h", 3, 1, 0);
        assert_eq!(p.action, Action::Unchanged);
        assert!(p.steps.is_empty());
        let p = plan_service("backend", Some(("a:1", "h", 3)), "a:2", "h2", 3, 1, 0);
        assert_eq!(p.action, Action::Replace);
        assert_eq!(
            p.describe(),
            "backend: replace 3 → 3 (a:1 → a:2) in 6 step(s): +1 -1 +1 -1 +1 -1"
        );
    }
}

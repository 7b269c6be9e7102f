//! A Chain's checks: its steps and their names (unique across `steps` and `onFailure`, not
//! taking a default name), `needs` as a graph without cycles, and one database per
//! transaction.

use super::Checker;
use crate::spec::error::did_you_mean;
use crate::spec::model::{ChainSpec, Step};
use std::collections::{BTreeMap, HashMap};

/// A list of steps: its path (`spec.steps`), its steps, and the prefix of the names its
/// unnamed steps are recorded under (`step`).
type StepList<'a> = (&'static str, &'a [Step], &'static str);

impl Checker<'_, '_> {
    pub(super) fn chain(&mut self, chain: &ChainSpec) {
        self.scheduling("spec", &chain.scheduling());
        if chain.steps.is_empty() {
            self.error("spec.steps", "a chain needs at least one step");
        }
        let lists: [StepList<'_>; 2] = [
            ("spec.steps", &chain.steps, "step"),
            ("spec.onFailure", chain.on_failure_steps(), "on-failure"),
        ];
        let names = self.named_steps(&lists);
        self.default_names_taken(&lists, &names);
        self.on_failure_needs(chain);
        self.needs(chain);
        self.transaction_database(chain);
    }

    /// Checks every step of `lists` and its name; returns where each name is written first
    /// (`spec.steps[1]`), by name.
    fn named_steps(&mut self, lists: &[StepList<'_>]) -> BTreeMap<String, String> {
        // Step names are unique across `steps` and `onFailure`: both are recorded in the same
        // run, and an `onFailure` step is told which step failed by name.
        let mut names: BTreeMap<String, String> = BTreeMap::new();
        for &(list, steps, _) in lists {
            for (i, step) in steps.iter().enumerate() {
                let base = format!("{list}[{i}]");
                if let Some(name) = &step.name {
                    self.name(&format!("{base}.name"), name);
                    if let Some(first) = names.get(name) {
                        let first = first.clone();
                        self.error_hint(
                            &format!("{base}.name"),
                            format!("duplicate step name `{name}`"),
                            Some(format!(
                                "{} is already named `{name}`; step names are unique in a chain, `onFailure` steps included",
                                describe_step(&first)
                            )),
                        );
                    } else {
                        names.insert(name.clone(), base.clone());
                    }
                }
                self.step(&base, step);
            }
        }
        names
    }

    /// An unnamed step is recorded as `step-<n>` (`on-failure-<n>`): an explicit name must
    /// not take that.
    fn default_names_taken(&mut self, lists: &[StepList<'_>], names: &BTreeMap<String, String>) {
        for &(list, steps, prefix) in lists {
            for (j, step) in steps.iter().enumerate() {
                let default = format!("{prefix}-{}", j + 1);
                if step.name.is_some() {
                    continue;
                }
                if let Some(at) = names.get(&default).cloned() {
                    let which = describe_step(&format!("{list}[{j}]"));
                    self.error_hint(
                        &format!("{at}.name"),
                        format!("step name `{default}` is the name {which} gets by default"),
                        Some(format!(
                            "{which} has no name and is recorded as `{default}`; rename one of them"
                        )),
                    );
                }
            }
        }
    }

    fn on_failure_needs(&mut self, chain: &ChainSpec) {
        for (i, step) in chain.on_failure_steps().iter().enumerate() {
            if step.needs.is_some() {
                self.error_hint(
                    &format!("spec.onFailure[{i}].needs"),
                    "`needs` cannot be used on `onFailure` steps",
                    Some("`onFailure` steps run one after another, in the order written; remove `needs`".into()),
                );
            }
        }
    }

    /// A transaction is one connection, so its SQL steps all run on one database.
    fn transaction_database(&mut self, chain: &ChainSpec) {
        if chain.transaction != Some(true) {
            return;
        }
        let sql_databases: Vec<(usize, Option<&str>)> = chain
            .steps
            .iter()
            .enumerate()
            .filter(|(_, s)| s.sql.is_some())
            .map(|(i, s)| (i, s.database.as_deref()))
            .collect();
        if let Some((_, first_db)) = sql_databases.first().copied() {
            for (i, db) in sql_databases.iter().skip(1) {
                if *db != first_db {
                    self.error_hint(
                        &format!("spec.steps[{i}].database"),
                        "every SQL step of a transactional chain must use the same database",
                        Some(format!(
                            "the first SQL step uses {}; drop `transaction: true` or use one database",
                            first_db.map_or_else(|| "the scheduler's database".into(), |d| format!("`{d}`"))
                        )),
                    );
                }
            }
        }
    }

    /// One step of `steps` or `onFailure`: its task and its own fields.
    fn step(&mut self, base: &str, step: &Step) {
        self.task(base, step);
        if let Some(db) = &step.database {
            self.database_ref(&format!("{base}.database"), db);
            self.database_applies(base, step);
        }
        self.positive(&format!("{base}.timeout"), step.timeout);
        if let Some(retries) = &step.retries {
            self.retries(&format!("{base}.retries"), retries);
        }
    }

    /// `needs`: known step names, no step needing itself, no cycle, not with a transaction.
    fn needs(&mut self, chain: &ChainSpec) {
        let names = chain.step_names();
        let index: HashMap<&str, usize> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i))
            .collect();
        let handlers = chain.on_failure_names();
        let transactional = chain.transaction == Some(true);
        // Edges of the graph that are well-formed, for the cycle check.
        let mut edges: Vec<Vec<usize>> = vec![Vec::new(); chain.steps.len()];
        for (i, step) in chain.steps.iter().enumerate() {
            let Some(needs) = &step.needs else { continue };
            if transactional {
                self.error_hint(
                    &format!("spec.steps[{i}].needs"),
                    "`needs` cannot be used with `transaction: true`",
                    Some("a transaction runs its SQL steps one after another on one connection; remove `needs` or `transaction: true`".into()),
                );
            }
            for (k, need) in needs.iter().enumerate() {
                let path = format!("spec.steps[{i}].needs[{k}]");
                if need == &names[i] {
                    self.error_hint(
                        &path,
                        format!("step `{need}` needs itself"),
                        Some("a step cannot wait for itself; remove it from `needs`".into()),
                    );
                    continue;
                }
                if needs[..k].contains(need) {
                    self.error(&path, format!("`{need}` is listed twice in `needs`"));
                    continue;
                }
                match index.get(need.as_str()) {
                    Some(&j) => edges[i].push(j),
                    None if handlers.contains(need) => self.error_hint(
                        &path,
                        format!("`{need}` is an `onFailure` step"),
                        Some("`needs` names steps of `steps`; `onFailure` steps run only when the chain fails".into()),
                    ),
                    None => {
                        let hint = did_you_mean(need, names.iter().map(String::as_str))
                            .or_else(|| Some(format!("the steps are {}", quoted_list(&names))));
                        self.error_hint(&path, format!("no step named `{need}`"), hint);
                    }
                }
            }
        }
        self.needs_cycles(chain, &names, &edges);
    }

    /// Each cycle of `needs`, reported once, at the step of the cycle written first.
    fn needs_cycles(&mut self, chain: &ChainSpec, names: &[String], edges: &[Vec<usize>]) {
        for cycle in find_cycles(edges) {
            let first = *cycle.iter().min().expect("a cycle has steps");
            let start = cycle
                .iter()
                .position(|&s| s == first)
                .expect("in the cycle");
            let mut order: Vec<usize> = cycle[start..].to_vec();
            order.extend_from_slice(&cycle[..start]);
            let next = order.get(1).copied().unwrap_or(first);
            let k = chain.steps[first]
                .needs
                .as_ref()
                .and_then(|n| n.iter().position(|x| x == &names[next]))
                .unwrap_or(0);
            let mut shown: Vec<String> = order.iter().map(|&s| format!("`{}`", names[s])).collect();
            shown.push(format!("`{}`", names[first]));
            self.error_hint(
                &format!("spec.steps[{first}].needs[{k}]"),
                format!("steps needing each other form a cycle: {}", shown.join(" needs ")),
                Some("a step can only need steps that do not (even indirectly) need it; remove one of these needs".into()),
            );
        }
    }
}

/// `spec.steps[1]` → "step 2", `spec.onFailure[0]` → "onFailure step 1", for hints.
fn describe_step(path: &str) -> String {
    let number = |rest: &str| {
        rest.trim_end_matches(']')
            .parse::<usize>()
            .map_or(0, |i| i + 1)
    };
    if let Some(rest) = path.strip_prefix("spec.steps[") {
        format!("step {}", number(rest))
    } else if let Some(rest) = path.strip_prefix("spec.onFailure[") {
        format!("onFailure step {}", number(rest))
    } else {
        path.to_string()
    }
}

fn quoted_list(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Cycles of a graph given as adjacency lists (`edges[i]`: what `i` needs), each as the steps
/// along it: one per back edge of a depth-first search, so a graph with a cycle has at least
/// one reported. The search is iterative, so a long chain cannot overflow the stack.
fn find_cycles(edges: &[Vec<usize>]) -> Vec<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    let mut mark = vec![Mark::New; edges.len()];
    let mut cycles = Vec::new();
    for root in 0..edges.len() {
        if mark[root] != Mark::New {
            continue;
        }
        // (node, next edge to follow)
        let mut path: Vec<(usize, usize)> = vec![(root, 0)];
        mark[root] = Mark::OnPath;
        while let Some(&mut (node, ref mut next)) = path.last_mut() {
            if let Some(&to) = edges[node].get(*next) {
                *next += 1;
                match mark[to] {
                    Mark::New => {
                        mark[to] = Mark::OnPath;
                        path.push((to, 0));
                    }
                    Mark::OnPath => {
                        let from = path
                            .iter()
                            .position(|(n, _)| *n == to)
                            .expect("on the path");
                        cycles.push(path[from..].iter().map(|(n, _)| *n).collect());
                    }
                    Mark::Done => {}
                }
            } else {
                mark[node] = Mark::Done;
                path.pop();
            }
        }
    }
    cycles
}
